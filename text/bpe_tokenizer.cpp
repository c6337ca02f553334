#include "text/bpe_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <unordered_map>
#include <utility>

#include "text/error.h"
#include "text/hf/added_tokens.h"
#include "text/hf/bpe_model.h"
#include "text/hf/decoders.h"
#include "text/hf/json_field.h"
#include "text/hf/normalizers.h"
#include "text/hf/post_processor.h"
#include "text/hf/pre_tokenizers.h"
#include "text/tokenizer_config.h"

namespace lowbit::text {

struct BpeTokenizer::Pipeline {
  std::string file;
  std::unique_ptr<hf::BpeModel> model;
  std::unique_ptr<hf::Normalizer> normalizer;
  std::unique_ptr<hf::PreTokenizer> pre_tokenizer;
  std::unique_ptr<hf::Decoder> decoder;
  hf::SpecialTokenFrame frame;

  std::vector<hf::AddedToken> added;
  std::unordered_map<std::string, int32_t> added_ids;
  // Added tokens found in the raw text, then those found after normalization.
  std::unique_ptr<hf::AddedTokenMatcher> raw_matcher, normalized_matcher;

  // By id: the token text (added tokens take precedence, as in the Rust
  // library), whether there is one, whether it is special.
  std::vector<std::string> tokens;
  std::vector<bool> has_token, special;
};

namespace {

template <typename Read>
auto read_optional(const hf::JsonField& root, const std::string& key, Read read) {
  const std::optional<hf::JsonField> field = root.find(key);
  return field ? read(*field) : decltype(read(*field)){};
}

}  // namespace

BpeTokenizer::BpeTokenizer(const std::string& tokenizer_json) : pipeline_(std::make_unique<Pipeline>()) {
  Pipeline& p = *pipeline_;
  p.file = tokenizer_json;
  const nlohmann::json json = hf::read_json_file(tokenizer_json);
  const hf::JsonField root(json, tokenizer_json);
  if (!json.is_object()) root.fail("must be a JSON object (a tokenizer.json)");
  p.model = std::make_unique<hf::BpeModel>(root.at("model"));
  p.normalizer = read_optional(root, "normalizer", hf::read_normalizer);
  p.pre_tokenizer = read_optional(root, "pre_tokenizer", hf::read_pre_tokenizer);
  p.decoder = read_optional(root, "decoder", hf::read_decoder);
  p.frame = read_optional(root, "post_processor", hf::read_post_processor);
  p.added = read_optional(root, "added_tokens", hf::read_added_tokens);

  int64_t largest = -1;
  for (const auto& [token, id] : p.model->vocab()) largest = std::max<int64_t>(largest, id);
  for (const hf::AddedToken& t : p.added) largest = std::max<int64_t>(largest, t.id);
  // Ids index tables, so they must be near-dense: real files number their
  // tokens 0..n-1, the added ones right after the model's.
  const auto count = static_cast<int64_t>(p.model->vocab().size() + p.added.size());
  if (largest >= 2 * count + 1024)
    throw_error(tokenizer_json, ": token ids reach ", largest, " for ", count,
                " tokens; ids this sparse are not supported");
  p.tokens.resize(largest + 1);
  p.has_token.resize(largest + 1);
  p.special.resize(largest + 1);
  for (const auto& [token, id] : p.model->vocab()) {
    p.tokens[id] = token;
    p.has_token[id] = true;
  }
  std::vector<const hf::AddedToken*> raw, normalized;
  std::vector<std::string> raw_spellings, normalized_spellings;
  for (const hf::AddedToken& t : p.added) {
    p.tokens[t.id] = t.content;
    p.has_token[t.id] = true;
    p.special[t.id] = t.special;
    p.added_ids.emplace(t.content, t.id);
    // A normalized token is looked for in normalized text, so spelled normalized.
    if (t.normalized) {
      normalized.push_back(&t);
      normalized_spellings.push_back(t.content);
      if (p.normalizer) p.normalizer->apply(normalized_spellings.back());
    } else {
      raw.push_back(&t);
      raw_spellings.push_back(t.content);
    }
  }
  p.raw_matcher = std::make_unique<hf::AddedTokenMatcher>(raw, raw_spellings);
  p.normalized_matcher = std::make_unique<hf::AddedTokenMatcher>(normalized, normalized_spellings);

  for (const std::vector<int32_t>* side : {&p.frame.prefix, &p.frame.suffix}) {
    for (const int32_t id : *side)
      if (id >= vocab_size() || !p.has_token[id])
        root.at("post_processor").fail("adds the id " + std::to_string(id) + ", which has no token");
  }

  const std::string directory = std::filesystem::path(tokenizer_json).parent_path().string();
  if (const std::optional<TokenizerConfig> config = read_tokenizer_config(directory)) {
    const SpecialTokenIds ids = special_token_ids(*config, *this);
    bos_id_ = ids.bos;
    eos_id_ = ids.eos;
    pad_id_ = ids.pad;
    // transformers' Llama tokenizers rebuild the template from these flags.
    const auto frame_side = [&](const std::optional<bool>& add, const std::optional<int32_t>& id,
                                const char* key, std::vector<int32_t>& side) {
      if (!add) return;
      if (*add && !id) throw_error(config->path, ": ", key, " is true but the token it adds is not set");
      side = *add ? std::vector<int32_t>{*id} : std::vector<int32_t>{};
    };
    frame_side(config->add_bos_token, bos_id_, "add_bos_token", p.frame.prefix);
    frame_side(config->add_eos_token, eos_id_, "add_eos_token", p.frame.suffix);
  } else {
    // No config: the template's lone special token before $A is BOS, after it EOS.
    if (p.frame.prefix.size() == 1) bos_id_ = p.frame.prefix[0];
    if (p.frame.suffix.size() == 1) eos_id_ = p.frame.suffix[0];
  }
}

BpeTokenizer::~BpeTokenizer() = default;

int64_t BpeTokenizer::vocab_size() const { return static_cast<int64_t>(pipeline_->tokens.size()); }

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  const std::string key(token);
  if (const auto it = pipeline_->added_ids.find(key); it != pipeline_->added_ids.end()) return it->second;
  const auto& vocab = pipeline_->model->vocab();
  if (const auto it = vocab.find(key); it != vocab.end()) return it->second;
  return std::nullopt;
}

std::string BpeTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !pipeline_->has_token[id])
    throw_error(pipeline_->file, ": id ", id, " has no token (vocab_size ", vocab_size(), ")");
  return pipeline_->tokens[id];
}

std::vector<int32_t> BpeTokenizer::encode_utf8(std::string_view text, bool add_special_tokens) const {
  const Pipeline& p = *pipeline_;
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = p.frame.prefix;
  std::vector<hf::Piece> pieces;
  for (const hf::TextSegment& raw : p.raw_matcher->split(text)) {
    if (raw.token) {
      ids.push_back(raw.token->id);
      continue;
    }
    // Normalization runs on the text between added tokens, one stretch at a time.
    std::string stretch(text.substr(raw.begin, raw.end - raw.begin));
    if (p.normalizer) p.normalizer->apply(stretch);
    for (const hf::TextSegment& part : p.normalized_matcher->split(stretch)) {
      if (part.token) {
        ids.push_back(part.token->id);
        continue;
      }
      pieces.assign(1, {stretch.substr(part.begin, part.end - part.begin),
                        raw.begin == 0 && part.begin == 0});
      if (p.pre_tokenizer) p.pre_tokenizer->apply(pieces);
      for (const hf::Piece& piece : pieces) p.model->tokenize(piece.text, ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), p.frame.suffix.begin(), p.frame.suffix.end());
  return ids;
}

std::string BpeTokenizer::decode_in_range(const std::vector<int32_t>& ids,
                                          bool skip_special_tokens) const {
  const Pipeline& p = *pipeline_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    if (!p.has_token[id]) id_to_token(id);  // throws, naming the id
    if (skip_special_tokens && p.special[id]) continue;
    tokens.push_back(p.tokens[id]);
  }
  if (p.decoder) p.decoder->apply(tokens);
  // Without a decoder the Rust library joins the tokens with spaces.
  std::string text;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0 && !p.decoder) text += ' ';
    text += tokens[i];
  }
  return text;
}

}  // namespace lowbit::text
