// GPT-2's byte-level alphabet: every byte stands for one printable code point,
// so that a byte-level BPE vocabulary is plain text. Bytes '!'..'~', 0xA1..0xAC
// and 0xAE..0xFF map to themselves; the other 68, in byte order, to U+0100,
// U+0101, ... (so the space is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A). This is
// bytes_to_unicode() of GPT-2's encoder.py, which tokenizers' byte_level.rs
// reproduces.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lowbit::text::hf {

// The UTF-8 of the code point that stands for `byte`.
const std::string& byte_level_char(uint8_t byte);

// The byte a code point stands for, or nullopt for code points outside the alphabet.
std::optional<uint8_t> byte_level_byte(char32_t code_point);

// Every byte of `text` replaced by its code point.
std::string to_byte_level(std::string_view text);

}  // namespace lowbit::text::hf
