#include "text/sentencepiece_tokenizer.h"

#include <filesystem>

#include "text/error.h"
#include "text/sentencepiece/load_module.h"
#include "text/sentencepiece/model_check.h"
#include "text/tokenizer_config.h"

namespace lowbit::text {

struct SentencePieceTokenizer::Model {
  std::string file;
  std::unique_ptr<sentencepiece_module::Model> processor;
  bool add_bos = true;
  bool add_eos = false;

  void check(const std::string& error, const char* what) const {
    if (!error.empty()) throw_error(file, ": SentencePiece could not ", what, ": ", error);
  }
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_file)
    : model_(std::make_unique<Model>()) {
  Model& m = *model_;
  m.file = model_file;
  const sentencepiece_module::Api& api = sentencepiece_module::api();
  // libsentencepiece trusts the file (model_check.h): it gets the bytes only
  // once lowbit has checked them, and not the path, which could change since.
  const std::string bytes = read_sentencepiece_model(model_file);
  std::string error;
  m.processor = api.load(bytes, error);
  m.check(error, "load it as a model");
  // SentencePiece uses -1 for "no such token".
  const auto own = [](int id) { return id >= 0 ? std::optional<int32_t>(id) : std::nullopt; };
  bos_id_ = own(m.processor->bos_id());
  eos_id_ = own(m.processor->eos_id());
  pad_id_ = own(m.processor->pad_id());
  const std::string directory = std::filesystem::path(model_file).parent_path().string();
  if (const std::optional<TokenizerConfig> config = read_tokenizer_config(directory)) {
    const SpecialTokenIds ids = special_token_ids(*config, *this);
    if (ids.bos) bos_id_ = ids.bos;
    if (ids.eos) eos_id_ = ids.eos;
    if (ids.pad) pad_id_ = ids.pad;
    m.add_bos = config->add_bos_token.value_or(true);
    m.add_eos = config->add_eos_token.value_or(false);
    if (config->add_bos_token.value_or(false) && !bos_id_)
      throw_error(config->path, ": add_bos_token is true but ", model_file, " has no BOS token");
    if (m.add_eos && !eos_id_)
      throw_error(config->path, ": add_eos_token is true but ", model_file, " has no EOS token");
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

int64_t SentencePieceTokenizer::vocab_size() const { return model_->processor->piece_size(); }

std::optional<int32_t> SentencePieceTokenizer::token_to_id(std::string_view token) const {
  // PieceToId answers the unknown token's id for any piece it does not know.
  const int id = model_->processor->piece_to_id(token);
  if (id < 0 || (model_->processor->is_unknown(id) && model_->processor->id_to_piece(id) != token))
    return std::nullopt;
  return id;
}

std::string SentencePieceTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw_error(model_->file, ": id ", id, " has no token (vocab_size ", vocab_size(), ")");
  return model_->processor->id_to_piece(id);
}

std::vector<int32_t> SentencePieceTokenizer::encode_utf8(std::string_view text,
                                                         bool add_special_tokens) const {
  std::vector<int> pieces;
  model_->check(model_->processor->encode(text, pieces), "encode the text");
  std::vector<int32_t> ids;
  ids.reserve(pieces.size() + 2);
  if (add_special_tokens && model_->add_bos && bos_id_) ids.push_back(*bos_id_);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (add_special_tokens && model_->add_eos && eos_id_) ids.push_back(*eos_id_);
  return ids;
}

std::string SentencePieceTokenizer::decode_in_range(const std::vector<int32_t>& ids,
                                                    bool skip_special_tokens) const {
  // SentencePiece decodes control tokens to nothing; spell them out unless skipped.
  std::string text;
  std::vector<int> stretch;
  const auto flush = [&] {
    if (stretch.empty()) return;
    std::string decoded;
    model_->check(model_->processor->decode(stretch, decoded), "decode the ids");
    text += decoded;
    stretch.clear();
  };
  for (const int32_t id : ids) {
    if (!model_->processor->is_control(id)) {
      stretch.push_back(id);
      continue;
    }
    flush();
    if (!skip_special_tokens) text += model_->processor->id_to_piece(id);
  }
  flush();
  return text;
}

}  // namespace lowbit::text
