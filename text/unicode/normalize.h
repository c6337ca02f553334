// Unicode normalization forms and lowercasing for the tokenizer.json
// normalizers, done by ICU on UTF-8 text.
#pragma once

#include <string>
#include <string_view>

namespace lowbit::text::unicode {

enum class NormalForm { NFC, NFD, NFKC, NFKD };

std::string normalize(std::string_view text, NormalForm form);

// Each code point mapped on its own, as Rust's char::to_lowercase does (so a
// final capital sigma becomes σ, not the context-dependent ς; İ becomes i̇).
std::string to_lowercase(std::string_view text);

}  // namespace lowbit::text::unicode
