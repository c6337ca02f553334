// The Unicode character classes the Hugging Face pipeline tests with Rust's
// char methods and regex classes, answered from ICU's property tables.
#pragma once

namespace lowbit::text::unicode {

// Rust char::is_whitespace: the White_Space property.
bool is_whitespace(char32_t c);

// Rust char::is_numeric: general categories Nd, Nl and No.
bool is_numeric(char32_t c);

// Rust regex's \w (UTS #18 annex C): Alphabetic, marks, Nd, Pc, Join_Control.
bool is_word_char(char32_t c);

}  // namespace lowbit::text::unicode
