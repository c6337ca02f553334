#include "text/unicode/char_class.h"

#include <unicode/uchar.h>

namespace lowbit::text::unicode {

bool is_whitespace(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

bool is_numeric(char32_t c) {
  const uint32_t mask = U_GET_GC_MASK(static_cast<UChar32>(c));
  return (mask & (U_GC_ND_MASK | U_GC_NL_MASK | U_GC_NO_MASK)) != 0;
}

bool is_word_char(char32_t c) {
  const auto cp = static_cast<UChar32>(c);
  const uint32_t mask = U_GET_GC_MASK(cp);
  return u_isUAlphabetic(cp) || (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0 ||
         u_hasBinaryProperty(cp, UCHAR_JOIN_CONTROL);
}

}  // namespace lowbit::text::unicode
