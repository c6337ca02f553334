// One value of a tokenizer.json (or tokenizer_config.json) together with the
// file and the key path that lead to it, so that every complaint about it can
// name the file, the path (`pre_tokenizer.pretokenizers[1].type`) and the value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace lowbit::text::hf {

class JsonField {
 public:
  JsonField(const nlohmann::json& value, const std::string& file, std::string path = "");

  const nlohmann::json& json() const { return *value_; }
  const std::string& file() const { return *file_; }
  const std::string& path() const { return path_; }
  bool is_null() const { return value_->is_null(); }

  // Member `key` of an object: required (missing or null throws), or optional.
  JsonField at(const std::string& key) const;
  std::optional<JsonField> find(const std::string& key) const;
  // Element `index` of an array, and the array's length.
  JsonField at(size_t index) const;
  size_t size() const;

  std::string as_string() const;
  bool as_bool() const;
  int64_t as_int() const;
  // A string of exactly one code point (Metaspace's replacement, Strip's content).
  char32_t as_char() const;

  // Optional members with their defaults.
  bool bool_or(const std::string& key, bool fallback) const;
  std::string string_or(const std::string& key, const std::string& fallback) const;

  // "<file>: <path>: <problem>" as an Error.
  [[noreturn]] void fail(const std::string& problem) const;
  // "<file>: <path> is <value>, which is not supported (supported: <supported>)".
  [[noreturn]] void unsupported(const std::string& supported) const;
  // The value as JSON text, shortened for messages.
  std::string quoted() const;

 private:
  JsonField(const nlohmann::json& value, std::shared_ptr<const std::string> file, std::string path);
  void expect(bool ok, const char* what) const;

  const nlohmann::json* value_;
  std::shared_ptr<const std::string> file_;
  std::string path_;
};

// Reads and parses a JSON file; a missing file or a syntax error throws an
// Error naming the file (and the byte where parsing stopped).
nlohmann::json read_json_file(const std::string& path);

}  // namespace lowbit::text::hf
