#include "text/hf/pattern.h"

#include "text/error.h"

namespace lowbit::text::hf {

Pattern::Pattern(const JsonField& field) {
  if (const std::optional<JsonField> literal = field.find("String")) {
    literal_ = literal->as_string();
  } else if (const std::optional<JsonField> regex = field.find("Regex")) {
    try {
      regex_.emplace(regex->as_string());
    } catch (const Error& e) {
      regex->fail(std::string("is not a usable pattern: ") + e.what());
    }
  } else {
    field.unsupported("{\"String\": ...} or {\"Regex\": ...}");
  }
}

std::vector<unicode::Span> Pattern::find_all(std::string_view text) const {
  if (regex_) return regex_->find_all(text);
  std::vector<unicode::Span> matches;
  if (literal_.empty()) return matches;
  for (size_t at = text.find(literal_); at != std::string_view::npos;
       at = text.find(literal_, at + literal_.size()))
    matches.push_back({at, at + literal_.size()});
  return matches;
}

Replacement::Replacement(const JsonField& field)
    : pattern_(field.at("pattern")), content_(field.at("content").as_string()) {
  if (pattern_.is_regex() && content_.find('$') != std::string::npos)
    field.at("content").unsupported("content without '$' group references");
}

std::string Replacement::apply(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  size_t done = 0;
  for (const unicode::Span& m : pattern_.find_all(text)) {
    out.append(text.substr(done, m.begin - done));
    out += content_;
    done = m.end;
  }
  out.append(text.substr(done));
  return out;
}

}  // namespace lowbit::text::hf
