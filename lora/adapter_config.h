// PEFT's adapter_config.json as a LoraConfig: written with the keys PEFT
// writes, and read back with every PEFT option this library cannot honour
// refused by name. Pure JSON <-> LoraConfig, so the parser is testable (and
// fuzzed, tests/fuzz/adapter_config_fuzz.cpp) without a model or files.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "lora/apply_lora.h"

namespace lowbit::lora {

// The file's content for `config`. PEFT reads a target_modules list as names
// matched exactly or as a dot-suffix of the path, and a string as one regex
// matched against the whole path: plain names are written as a list,
// anything else as the one regex that means what PathPatterns means.
nlohmann::json adapter_config_to_json(const LoraConfig& config);

// The LoraConfig of the JSON read from `path` (named in every error, with the
// key and what was expected); list entries of target_modules become
// patterns matching those names literally. Values are not range-checked:
// call LoraConfig::validate().
LoraConfig adapter_config_from_json(const nlohmann::json& j, const std::string& path);

// `name` with the regex metacharacters escaped: a pattern matching it literally.
std::string regex_escape(const std::string& name);

}  // namespace lowbit::lora
