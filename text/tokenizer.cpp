#include "text/tokenizer.h"

#include <filesystem>

#include "text/bpe_tokenizer.h"
#include "text/error.h"
#include "text/sentencepiece_tokenizer.h"
#include "text/unicode/utf8.h"

namespace lowbit::text {

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (const std::optional<size_t> bad = unicode::find_invalid_utf8(text)) {
    throw_error("encode: the text is not UTF-8: byte ", *bad, " (0x", std::hex,
                static_cast<unsigned>(static_cast<unsigned char>(text[*bad])), std::dec,
                ") does not start a valid sequence");
  }
  return encode_utf8(text, add_special_tokens);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const int64_t size = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= size)
      throw_error("decode: id ", ids[i], " (position ", i, ") is outside the vocabulary [0, ", size, ")");
  }
  return decode_in_range(ids, skip_special_tokens);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (!fs::exists(status)) throw_error(path, ": does not exist");
  if (fs::is_directory(status)) {
    const fs::path json = fs::path(path) / "tokenizer.json";
    if (fs::exists(json)) return std::make_unique<BpeTokenizer>(json.string());
    const fs::path model = fs::path(path) / "tokenizer.model";
    if (fs::exists(model)) return std::make_unique<SentencePieceTokenizer>(model.string());
    throw_error(path, ": holds neither tokenizer.json nor tokenizer.model");
  }
  const std::string extension = fs::path(path).extension().string();
  if (extension == ".json") return std::make_unique<BpeTokenizer>(path);
  if (extension == ".model") return std::make_unique<SentencePieceTokenizer>(path);
  throw_error(path, ": unknown tokenizer file type \"", extension,
              "\" (supported: a checkpoint directory, a Hugging Face tokenizer.json, a "
              "SentencePiece .model file)");
}

}  // namespace lowbit::text
