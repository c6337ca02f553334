// A SentencePiece .model file (Llama 1/2, Mistral and models trained with
// train_sentencepiece) behind the Tokenizer interface, through
// sentencepiece::SentencePieceProcessor in the module liblowbit_sentencepiece
// (loaded on first use; see text/sentencepiece/module_api.h). Where CMake did
// not find SentencePiece (LOWBIT_WITH_SENTENCEPIECE undefined) the
// constructor throws an Error saying so. The file is checked by lowbit before
// SentencePiece reads it (text/sentencepiece/model_check.h).
#pragma once

#include <memory>
#include <string>

#include "text/tokenizer.h"

namespace lowbit::text {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // BOS, EOS and padding are the model's own ids unless tokenizer_config.json
  // beside the file names tokens. encode(..., true) adds BOS (when the model
  // has one) and no EOS, LlamaTokenizer's defaults, unless the config's
  // add_bos_token / add_eos_token say otherwise.
  explicit SentencePieceTokenizer(const std::string& model_file);
  ~SentencePieceTokenizer() override;

  int64_t vocab_size() const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;

 protected:
  std::vector<int32_t> encode_utf8(std::string_view text, bool add_special_tokens) const override;
  // Control tokens (BOS, EOS, ...) decode to their own text unless skipped;
  // SentencePiece decodes the stretches between them.
  std::string decode_in_range(const std::vector<int32_t>& ids, bool skip_special_tokens) const override;

 private:
  struct Model;
  std::unique_ptr<Model> model_;
};

}  // namespace lowbit::text
