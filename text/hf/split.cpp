#include "text/hf/split.h"

#include <algorithm>

namespace lowbit::text::hf {

SplitBehavior read_split_behavior(const JsonField& field) {
  const std::string name = field.as_string();
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  field.unsupported("\"Removed\", \"Isolated\", \"MergedWithPrevious\", \"MergedWithNext\", \"Contiguous\"");
}

std::vector<Span> split_spans(size_t length, const std::vector<Span>& matches,
                              SplitBehavior behavior, bool invert) {
  struct Part {
    Span span;
    bool is_match;
  };
  std::vector<Part> parts;
  size_t done = 0;
  for (const Span& m : matches) {
    if (m.begin > done) parts.push_back({{done, m.begin}, invert});
    parts.push_back({m, !invert});
    done = m.end;
  }
  if (done < length) parts.push_back({{done, length}, invert});

  // The Rust library's folds: walking the parts, a part joins the last piece
  // when `joins(previous part was a match, this part is a match)`.
  const auto fold = [](auto first, auto last, auto joins, auto join) {
    std::vector<Span> pieces;
    bool previous_match = false;
    for (; first != last; ++first) {
      if (!pieces.empty() && joins(previous_match, first->is_match)) {
        join(pieces.back(), first->span);
      } else {
        pieces.push_back(first->span);
      }
      previous_match = first->is_match;
    }
    return pieces;
  };
  const auto same_kind = [](bool previous, bool match) { return match == previous; };
  const auto match_after_other = [](bool previous, bool match) { return match && !previous; };
  const auto extend_end = [](Span& piece, const Span& part) { piece.end = part.end; };
  const auto extend_begin = [](Span& piece, const Span& part) { piece.begin = part.begin; };

  std::vector<Span> pieces;
  switch (behavior) {
    case SplitBehavior::Removed:
      for (const Part& p : parts)
        if (!p.is_match) pieces.push_back(p.span);
      break;
    case SplitBehavior::Isolated:
      for (const Part& p : parts) pieces.push_back(p.span);
      break;
    case SplitBehavior::Contiguous:  // runs of parts of one kind become one piece
      pieces = fold(parts.begin(), parts.end(), same_kind, extend_end);
      break;
    case SplitBehavior::MergedWithPrevious:  // a match joins the piece before it
      pieces = fold(parts.begin(), parts.end(), match_after_other, extend_end);
      break;
    case SplitBehavior::MergedWithNext:  // the mirror image, walking backwards
      pieces = fold(parts.rbegin(), parts.rend(), match_after_other, extend_begin);
      std::reverse(pieces.begin(), pieces.end());
      break;
  }
  std::vector<Span> kept;
  kept.reserve(pieces.size());
  for (const Span& s : pieces)
    if (s.end > s.begin) kept.push_back(s);
  return kept;
}

}  // namespace lowbit::text::hf
