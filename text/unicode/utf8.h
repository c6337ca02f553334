// UTF-8 helpers for the tokenizers: validation that reports where a text stops
// being UTF-8, code point stepping, encoding, and the lossy conversion that
// Rust's String::from_utf8_lossy performs (decoders must produce the same text).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace lowbit::text::unicode {

// The offset of the first byte that does not start a well-formed UTF-8
// sequence (Unicode 15, table 3-7: no overlongs, surrogates or values past
// U+10FFFF), or nullopt when the whole text is valid.
std::optional<size_t> find_invalid_utf8(std::string_view text);

// Decodes the code point at `pos` of valid UTF-8 and moves `pos` past it.
char32_t next_code_point(std::string_view text, size_t& pos);

// The byte length of the sequence whose first byte is `lead` (valid UTF-8).
inline size_t sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

void append_utf8(std::string& out, char32_t code_point);

// `bytes` with every maximal ill-formed subsequence replaced by U+FFFD, the
// "substitution of maximal subparts" practice that from_utf8_lossy follows.
std::string utf8_lossy(std::string_view bytes);

}  // namespace lowbit::text::unicode
