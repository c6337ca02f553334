// How the Rust library cuts a string around pattern matches
// (NormalizedString::split with a SplitDelimiterBehavior), shared by the Split,
// Digits, Metaspace and whitespace pre-tokenizers.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "text/hf/json_field.h"
#include "text/unicode/regex.h"
#include "text/unicode/utf8.h"

namespace lowbit::text::hf {

using unicode::Span;

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// "Removed", "Isolated", ... as tokenizer.json spells them.
SplitBehavior read_split_behavior(const JsonField& field);

// The pieces of a text of `length` bytes cut at `matches` (sorted,
// non-overlapping): the text is first partitioned into matches and the gaps
// between them (with `invert`, the gaps count as the matches), then `behavior`
// drops, isolates or attaches the matches. Empty pieces are dropped, as
// PreTokenizedString::split drops them.
std::vector<Span> split_spans(size_t length, const std::vector<Span>& matches,
                              SplitBehavior behavior, bool invert = false);

// Every code point of valid UTF-8 `text` for which `is_match` holds is a match
// of its own (the Rust library's char patterns).
template <typename Predicate>
std::vector<Span> char_matches(std::string_view text, Predicate is_match) {
  std::vector<Span> matches;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t begin = pos;
    if (is_match(unicode::next_code_point(text, pos))) matches.push_back({begin, pos});
  }
  return matches;
}

}  // namespace lowbit::text::hf
