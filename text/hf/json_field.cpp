#include "text/hf/json_field.h"

#include <fstream>
#include <iterator>

#include "text/error.h"
#include "text/unicode/utf8.h"

namespace lowbit::text::hf {

JsonField::JsonField(const nlohmann::json& value, const std::string& file, std::string path)
    : JsonField(value, std::make_shared<const std::string>(file), std::move(path)) {}

JsonField::JsonField(const nlohmann::json& value, std::shared_ptr<const std::string> file,
                     std::string path)
    : value_(&value), file_(std::move(file)), path_(std::move(path)) {}

JsonField JsonField::at(const std::string& key) const {
  std::optional<JsonField> member = find(key);
  const std::string path = path_.empty() ? key : path_ + "." + key;
  if (!member) throw_error(*file_, ": ", path, " is missing (or null)");
  return *member;
}

std::optional<JsonField> JsonField::find(const std::string& key) const {
  expect(value_->is_object(), "an object");
  const auto it = value_->find(key);
  if (it == value_->end() || it->is_null()) return std::nullopt;
  return JsonField(*it, file_, path_.empty() ? key : path_ + "." + key);
}

JsonField JsonField::at(size_t index) const {
  expect(value_->is_array(), "an array");
  if (index >= value_->size()) fail("has no element " + std::to_string(index));
  return JsonField((*value_)[index], file_, path_ + "[" + std::to_string(index) + "]");
}

size_t JsonField::size() const {
  expect(value_->is_array(), "an array");
  return value_->size();
}

std::string JsonField::as_string() const {
  expect(value_->is_string(), "a string");
  return value_->get<std::string>();
}

bool JsonField::as_bool() const {
  expect(value_->is_boolean(), "true or false");
  return value_->get<bool>();
}

int64_t JsonField::as_int() const {
  expect(value_->is_number_integer(), "an integer");
  return value_->get<int64_t>();
}

char32_t JsonField::as_char() const {
  const std::string text = as_string();
  size_t pos = 0;
  if (text.empty() || unicode::find_invalid_utf8(text)) fail("must be one character, not " + quoted());
  const char32_t c = unicode::next_code_point(text, pos);
  if (pos != text.size()) fail("must be one character, not " + quoted());
  return c;
}

bool JsonField::bool_or(const std::string& key, bool fallback) const {
  const std::optional<JsonField> member = find(key);
  return member ? member->as_bool() : fallback;
}

std::string JsonField::string_or(const std::string& key, const std::string& fallback) const {
  const std::optional<JsonField> member = find(key);
  return member ? member->as_string() : fallback;
}

void JsonField::fail(const std::string& problem) const {
  throw_error(*file_, ": ", path_.empty() ? "the top-level value" : path_, " ", problem);
}

void JsonField::unsupported(const std::string& supported) const {
  fail("is " + quoted() + ", which is not supported (supported: " + supported + ")");
}

std::string JsonField::quoted() const {
  constexpr size_t kLimit = 80;
  std::string text = value_->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > kLimit) {
    size_t cut = kLimit;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // whole characters
    text = text.substr(0, cut) + "...";
  }
  return text;
}

void JsonField::expect(bool ok, const char* what) const {
  if (!ok) fail(std::string("must be ") + what + ", not " + quoted());
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(path, ": cannot be opened for reading");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return nlohmann::json::parse(bytes);
  } catch (const nlohmann::json::parse_error& e) {
    throw_error(path, ": is not valid JSON (stopped at byte ", e.byte, ": ", e.what(), ")");
  } catch (const nlohmann::json::exception& e) {
    // A number beyond double's range is refused as out_of_range, not parse_error.
    throw_error(path, ": is not valid JSON (", e.what(), ")");
  }
}

}  // namespace lowbit::text::hf
