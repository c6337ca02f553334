// The pattern of a Split pre-tokenizer or a Replace normalizer/decoder:
// {"String": "..."} matched literally, or {"Regex": "..."} in Oniguruma syntax.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/hf/json_field.h"
#include "text/unicode/regex.h"

namespace lowbit::text::hf {

class Pattern {
 public:
  // `field` is the pattern object itself.
  explicit Pattern(const JsonField& field);

  // Non-overlapping matches, leftmost first; an empty literal matches nothing.
  std::vector<unicode::Span> find_all(std::string_view text) const;
  bool is_regex() const { return regex_.has_value(); }

 private:
  std::string literal_;
  std::optional<unicode::Regex> regex_;
};

// A Replace normalizer or decoder: {"pattern": ..., "content": "..."}.
class Replacement {
 public:
  // Refuses `$` in the content of a Regex pattern: the Rust library expands
  // group references there, which this reader does not.
  explicit Replacement(const JsonField& field);

  // `text` with every match replaced by the content.
  std::string apply(std::string_view text) const;

 private:
  Pattern pattern_;
  std::string content_;
};

}  // namespace lowbit::text::hf
