// Tokenizers of Hugging Face checkpoints (Llama, Mistral, Qwen2, GPT-2 style):
// one interface over tokenizer.json files with a BPE model and SentencePiece
// .model files, and load_tokenizer(), which finds and reads the right one in a
// checkpoint directory. Torch-free; every failure throws lowbit::text::Error.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::text {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // The ids of UTF-8 `text`; with add_special_tokens, framed by the special
  // tokens the tokenizer adds to a single sequence (BOS, for Llama). Text that
  // is not UTF-8 throws, naming the offset of the first bad byte.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;

  // The text of `ids`; skip_special_tokens drops special tokens (BOS, EOS, ...).
  // An id outside [0, vocab_size()) or without a token throws, naming it.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // One more than the largest id: the rows an embedding table needs.
  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  // Throws for an id without a token.
  virtual std::string id_to_token(int32_t id) const = 0;

  // From tokenizer_config.json beside the file when it exists, else from the
  // file itself (the special tokens around a tokenizer.json's template, a
  // SentencePiece model's own ids).
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> pad_id() const { return pad_id_; }

 protected:
  Tokenizer() = default;
  virtual std::vector<int32_t> encode_utf8(std::string_view text, bool add_special_tokens) const = 0;
  // Every id is in [0, vocab_size()) by now.
  virtual std::string decode_in_range(const std::vector<int32_t>& ids,
                                      bool skip_special_tokens) const = 0;

  std::optional<int32_t> bos_id_, eos_id_, pad_id_;
};

// `path` is a checkpoint directory (tokenizer.json is used, else
// tokenizer.model) or one of those files. Other file types, missing files and
// files this library cannot reproduce exactly throw an Error that names the
// file, the JSON key path, the offending value and what is supported.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace lowbit::text
