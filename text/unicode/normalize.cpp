#include "text/unicode/normalize.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include "text/error.h"
#include "text/unicode/utf8.h"

namespace lowbit::text::unicode {
namespace {

const icu::Normalizer2& instance(NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  switch (form) {
    case NormalForm::NFC: normalizer = icu::Normalizer2::getNFCInstance(status); break;
    case NormalForm::NFD: normalizer = icu::Normalizer2::getNFDInstance(status); break;
    case NormalForm::NFKC: normalizer = icu::Normalizer2::getNFKCInstance(status); break;
    case NormalForm::NFKD: normalizer = icu::Normalizer2::getNFKDInstance(status); break;
  }
  if (U_FAILURE(status) || normalizer == nullptr)
    throw_error("ICU has no normalizer for this form (", u_errorName(status), ")");
  return *normalizer;
}

}  // namespace

std::string normalize(std::string_view text, NormalForm form) {
  const icu::Normalizer2& normalizer = instance(form);
  const icu::StringPiece input(text.data(), static_cast<int32_t>(text.size()));
  UErrorCode status = U_ZERO_ERROR;
  if (normalizer.isNormalizedUTF8(input, status) && U_SUCCESS(status)) return std::string(text);
  status = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  normalizer.normalizeUTF8(0, input, sink, nullptr, status);
  if (U_FAILURE(status)) throw_error("ICU normalization failed (", u_errorName(status), ")");
  return out;
}

std::string to_lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const auto lead = static_cast<unsigned char>(text[pos]);
    if (lead < 0x80) {
      out.push_back(static_cast<char>(lead >= 'A' && lead <= 'Z' ? lead + ('a' - 'A') : lead));
      ++pos;
      continue;
    }
    // (U16_APPEND_UNSAFE reads its argument more than once.)
    const auto code_point = static_cast<UChar32>(next_code_point(text, pos));
    UChar source[2];
    int32_t source_length = 0;
    U16_APPEND_UNSAFE(source, source_length, code_point);
    // Full lowercase mappings expand a code point to at most three.
    UChar lower[8];
    UErrorCode status = U_ZERO_ERROR;
    const int32_t length = u_strToLower(lower, 8, source, source_length, "", &status);
    if (U_FAILURE(status)) throw_error("ICU lowercasing failed (", u_errorName(status), ")");
    for (int32_t i = 0; i < length;) {
      UChar32 cp;
      U16_NEXT_UNSAFE(lower, i, cp);
      append_utf8(out, static_cast<char32_t>(cp));
    }
  }
  return out;
}

}  // namespace lowbit::text::unicode
