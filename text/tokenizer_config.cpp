#include "text/tokenizer_config.h"

#include <filesystem>

#include "text/error.h"
#include "text/hf/json_field.h"
#include "text/tokenizer.h"

namespace lowbit::text {
namespace {

// transformers writes a token as its text or as a serialized AddedToken.
std::optional<std::string> read_token(const hf::JsonField& root, const std::string& key) {
  const std::optional<hf::JsonField> value = root.find(key);
  if (!value) return std::nullopt;
  if (value->json().is_object()) return value->at("content").as_string();
  if (!value->json().is_string())
    value->fail("must be a token (a string, or an object with \"content\"), not " + value->quoted());
  return value->as_string();
}

std::optional<bool> read_flag(const hf::JsonField& root, const std::string& key) {
  const std::optional<hf::JsonField> value = root.find(key);
  if (!value) return std::nullopt;
  return value->as_bool();
}

}  // namespace

std::optional<TokenizerConfig> read_tokenizer_config(const std::string& directory) {
  const std::string path = (std::filesystem::path(directory) / "tokenizer_config.json").string();
  if (!std::filesystem::exists(path)) return std::nullopt;
  const nlohmann::json json = hf::read_json_file(path);
  const hf::JsonField root(json, path);
  TokenizerConfig config;
  config.path = path;
  config.bos_token = read_token(root, "bos_token");
  config.eos_token = read_token(root, "eos_token");
  config.pad_token = read_token(root, "pad_token");
  config.add_bos_token = read_flag(root, "add_bos_token");
  config.add_eos_token = read_flag(root, "add_eos_token");
  return config;
}

SpecialTokenIds special_token_ids(const TokenizerConfig& config, const Tokenizer& tokenizer) {
  const auto id_of = [&](const std::optional<std::string>& token, const char* key) -> std::optional<int32_t> {
    if (!token) return std::nullopt;
    const std::optional<int32_t> id = tokenizer.token_to_id(*token);
    if (!id) throw_error(config.path, ": ", key, " is \"", *token, "\", which is not a token of the tokenizer");
    return id;
  };
  return {id_of(config.bos_token, "bos_token"), id_of(config.eos_token, "eos_token"),
          id_of(config.pad_token, "pad_token")};
}

}  // namespace lowbit::text
