// A Hugging Face tokenizer.json with a BPE model: byte-level BPE (GPT-2,
// Llama 3, Qwen2) and SentencePiece-style BPE with byte fallback (Llama 2,
// Mistral), run through the same stages as the Rust `tokenizers` library:
// added tokens, normalizer, pre-tokenizer, model, post-processor; decoder.
#pragma once

#include <memory>
#include <string>

#include "text/tokenizer.h"

namespace lowbit::text {

class BpeTokenizer final : public Tokenizer {
 public:
  // Reads `tokenizer_json` and tokenizer_config.json beside it, if any. A
  // config's add_bos_token / add_eos_token, where given, decide whether
  // encode(..., true) adds BOS / EOS, as transformers' Llama tokenizers do.
  explicit BpeTokenizer(const std::string& tokenizer_json);
  ~BpeTokenizer() override;

  int64_t vocab_size() const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;

 protected:
  std::vector<int32_t> encode_utf8(std::string_view text, bool add_special_tokens) const override;
  std::string decode_in_range(const std::vector<int32_t>& ids, bool skip_special_tokens) const override;

 private:
  struct Pipeline;
  std::unique_ptr<Pipeline> pipeline_;
};

}  // namespace lowbit::text
