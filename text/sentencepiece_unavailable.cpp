// Compiled instead of sentencepiece_tokenizer.cpp and train_sentencepiece.cpp
// when CMake did not find SentencePiece: every entry point says so.
#include "text/error.h"
#include "text/sentencepiece_tokenizer.h"
#include "text/train_sentencepiece.h"

namespace lowbit::text {
namespace {

[[noreturn]] void unavailable(const std::string& what) {
  throw_error(what, ": lowbit was built without SentencePiece (install libsentencepiece-dev and "
              "pkg-config, then configure again)");
}

}  // namespace

struct SentencePieceTokenizer::Model {};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_file) { unavailable(model_file); }
SentencePieceTokenizer::~SentencePieceTokenizer() = default;
int64_t SentencePieceTokenizer::vocab_size() const { unavailable("SentencePieceTokenizer"); }
std::optional<int32_t> SentencePieceTokenizer::token_to_id(std::string_view) const {
  unavailable("SentencePieceTokenizer");
}
std::string SentencePieceTokenizer::id_to_token(int32_t) const { unavailable("SentencePieceTokenizer"); }
std::vector<int32_t> SentencePieceTokenizer::encode_utf8(std::string_view, bool) const {
  unavailable("SentencePieceTokenizer");
}
std::string SentencePieceTokenizer::decode_in_range(const std::vector<int32_t>&, bool) const {
  unavailable("SentencePieceTokenizer");
}

std::string train_sentencepiece(const std::string&, const std::string&, int, const std::string&,
                                const SentencePieceTraining&) {
  unavailable("train_sentencepiece");
}

}  // namespace lowbit::text
