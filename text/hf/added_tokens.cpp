#include "text/hf/added_tokens.h"

#include <limits>

#include "text/unicode/char_class.h"
#include "text/unicode/utf8.h"

namespace lowbit::text::hf {
namespace {

// The code point that ends at `end` (valid UTF-8, end > 0).
char32_t code_point_before(std::string_view text, size_t end) {
  size_t begin = end - 1;
  while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
  return unicode::next_code_point(text, begin);
}

}  // namespace

std::vector<AddedToken> read_added_tokens(const JsonField& field) {
  std::vector<AddedToken> tokens;
  for (size_t i = 0; i < field.size(); ++i) {
    const JsonField entry = field.at(i);
    const JsonField id = entry.at("id");
    if (id.as_int() < 0 || id.as_int() > std::numeric_limits<int32_t>::max())
      id.fail("is not a token id in [0, 2^31)");
    AddedToken token;
    token.id = static_cast<int32_t>(id.as_int());
    token.content = entry.at("content").as_string();
    if (token.content.empty()) entry.at("content").fail("is empty");
    token.special = entry.bool_or("special", false);
    token.single_word = entry.bool_or("single_word", false);
    token.lstrip = entry.bool_or("lstrip", false);
    token.rstrip = entry.bool_or("rstrip", false);
    token.normalized = entry.bool_or("normalized", !token.special);
    tokens.push_back(std::move(token));
  }
  return tokens;
}

AddedTokenMatcher::AddedTokenMatcher(const std::vector<const AddedToken*>& tokens,
                                     const std::vector<std::string>& spellings)
    : nodes_(1) {
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::string& spelling = spellings[t];
    if (spelling.empty()) continue;
    first_bytes_[static_cast<unsigned char>(spelling[0])] = true;
    int32_t node = 0;
    for (const char c : spelling) {
      const auto byte = static_cast<unsigned char>(c);
      int32_t next = -1;
      for (const auto& [b, child] : nodes_[node].children)
        if (b == byte) next = child;
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_[node].children.emplace_back(byte, next);
        nodes_.emplace_back();
      }
      node = next;
    }
    // Two tokens with one spelling: the first listed keeps it.
    if (nodes_[node].token == nullptr) nodes_[node].token = tokens[t];
  }
}

std::pair<size_t, const AddedToken*> AddedTokenMatcher::longest_at(std::string_view text,
                                                                   size_t pos) const {
  std::pair<size_t, const AddedToken*> best{0, nullptr};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    int32_t next = -1;
    for (const auto& [b, child] : nodes_[node].children)
      if (b == byte) next = child;
    if (next < 0) break;
    node = next;
    if (nodes_[node].token != nullptr) best = {i + 1 - pos, nodes_[node].token};
  }
  return best;
}

std::vector<TextSegment> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<TextSegment> segments;
  size_t done = 0;  // the end of the last token segment
  size_t pos = 0;
  while (pos < text.size()) {
    if (!first_bytes_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    const auto [length, token] = longest_at(text, pos);
    if (token == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + length;
    pos = stop;
    if (token->single_word) {
      const bool word_before = start > 0 && unicode::is_word_char(code_point_before(text, start));
      size_t after = stop;
      const bool word_after =
          stop < text.size() && unicode::is_word_char(unicode::next_code_point(text, after));
      if (word_before || word_after) continue;
    }
    if (token->lstrip) {
      while (start > done && unicode::is_whitespace(code_point_before(text, start))) {
        start -= 1;
        while ((static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
      }
    }
    if (token->rstrip) {
      for (size_t next = stop; next < text.size();) {
        if (!unicode::is_whitespace(unicode::next_code_point(text, next))) break;
        stop = next;
      }
      pos = stop;
    }
    if (start > done) segments.push_back({done, start, nullptr});
    segments.push_back({start, stop, token});
    done = stop;
  }
  if (done < text.size()) segments.push_back({done, text.size(), nullptr});
  return segments;
}

}  // namespace lowbit::text::hf
