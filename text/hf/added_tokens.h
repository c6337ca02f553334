// The `added_tokens` of a tokenizer.json (special tokens such as
// <|begin_of_text|>, and tokens added for fine-tuning) and how they are cut out
// of a text before anything else sees it (tokenizer/added_vocabulary.rs):
// leftmost match first, the longest one where several start at the same byte;
// lstrip/rstrip take the whitespace beside a match into it; a single_word token
// only matches between non-word characters.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/hf/json_field.h"

namespace lowbit::text::hf {

struct AddedToken {
  int32_t id;
  std::string content;
  bool special, single_word, lstrip, rstrip, normalized;
};

std::vector<AddedToken> read_added_tokens(const JsonField& field);

// A part of a text: plain text, or one added token (with the whitespace its
// lstrip/rstrip took).
struct TextSegment {
  size_t begin, end;
  const AddedToken* token;  // null for plain text
};

class AddedTokenMatcher {
 public:
  // Each token is matched by `spellings[i]` (its content, or its normalized
  // content for tokens matched after normalization). The tokens must outlive
  // the matcher.
  AddedTokenMatcher(const std::vector<const AddedToken*>& tokens,
                    const std::vector<std::string>& spellings);

  // The text cut into plain and token segments, in order, covering it all;
  // no segment is empty.
  std::vector<TextSegment> split(std::string_view text) const;

 private:
  // A byte trie of the spellings.
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    const AddedToken* token = nullptr;
  };
  // The longest spelling that starts at `pos`: its length and token.
  std::pair<size_t, const AddedToken*> longest_at(std::string_view text, size_t pos) const;

  std::vector<Node> nodes_;
  bool first_bytes_[256] = {};
};

}  // namespace lowbit::text::hf
