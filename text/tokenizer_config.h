// What a checkpoint's tokenizer_config.json (written by transformers) says
// about special tokens: which tokens are BOS, EOS and padding, and whether BOS
// and EOS are added to every encoded sequence.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace lowbit::text {

class Tokenizer;

struct TokenizerConfig {
  std::string path;  // the file read, for messages
  std::optional<std::string> bos_token, eos_token, pad_token;
  std::optional<bool> add_bos_token, add_eos_token;
};

// Reads tokenizer_config.json in `directory`; nullopt when there is none. Each
// token may be a string, null, or an object with a "content" string; anything
// else throws, naming the key.
std::optional<TokenizerConfig> read_tokenizer_config(const std::string& directory);

struct SpecialTokenIds {
  std::optional<int32_t> bos, eos, pad;
};

// The ids of the config's tokens in `tokenizer`; a token it does not know
// throws, naming the config file, the key and the token.
SpecialTokenIds special_token_ids(const TokenizerConfig& config, const Tokenizer& tokenizer);

}  // namespace lowbit::text
