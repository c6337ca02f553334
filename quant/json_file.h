// Whole JSON documents of the file formats (Hugging Face config.json and
// shard indexes, PEFT's adapter_config.json) read and parsed in one place,
// with errors that name the file. It lives here, below io/ and lora/,
// because both read such files and neither may depend on the other (the
// layers in CMakeLists.txt).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace lowbit::quant {

// Parses `text`; `what` (usually the file's path) starts the error message.
nlohmann::json parse_json(const std::string& text, const std::string& what);

// Reads all of `path` and parses it; throws c10::Error naming `path` when
// it cannot be opened or read, or is not valid JSON.
nlohmann::json read_json_file(const std::string& path);

}  // namespace lowbit::quant
