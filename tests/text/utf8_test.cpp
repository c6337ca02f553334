// UTF-8 validation and the lossy reading decoders use, checked against the
// well-formedness table and the "maximal subpart" examples of the Unicode
// standard (chapter 3.9, table 3-7 and U+FFFD substitution).
#include <string>

#include <gtest/gtest.h>

#include "text/unicode/utf8.h"

namespace lowbit::text::unicode {
namespace {

TEST(Utf8, FindsTheFirstIllFormedByte) {
  EXPECT_EQ(find_invalid_utf8("a\u00E9\u65E5\U0001F600"), std::nullopt);
  EXPECT_EQ(find_invalid_utf8(std::string("\0", 1)), std::nullopt);
  EXPECT_EQ(find_invalid_utf8("\xC0\x80"), 0u);          // overlong NUL
  EXPECT_EQ(find_invalid_utf8("ab\xE0\x9F\xBF"), 2u);    // overlong three-byte form
  EXPECT_EQ(find_invalid_utf8("\xED\xA0\x80"), 0u);      // surrogate U+D800
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);  // past U+10FFFF
  EXPECT_EQ(find_invalid_utf8("\xF5"), 0u);
  EXPECT_EQ(find_invalid_utf8("xyz\xE6\x97"), 3u);       // cut short
  EXPECT_EQ(find_invalid_utf8("\x80"), 0u);              // a lone continuation byte
}

TEST(Utf8, LossyReadingReplacesMaximalSubparts) {
  // E6 97 could start 日 but stops: one U+FFFD for both bytes.
  EXPECT_EQ(utf8_lossy("a\xE6\x97z"), "a\uFFFDz");
  // C0 can start nothing: one U+FFFD each for C0 and 80.
  EXPECT_EQ(utf8_lossy("\xC0\x80"), "\uFFFD\uFFFD");
  // ED A0: A0 is outside ED's second-byte range, so ED alone is a subpart.
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98" "x"), "\uFFFDx");
  EXPECT_EQ(utf8_lossy("ok \u00E9"), "ok \u00E9");
}

TEST(Utf8, StepsAndEncodesCodePoints) {
  const std::string text = "a\u00E9\u65E5\U0001F600";
  size_t pos = 0;
  std::string rebuilt;
  for (const char32_t expected : {U'a', U'\u00E9', U'\u65E5', U'\U0001F600'}) {
    const char32_t cp = next_code_point(text, pos);
    EXPECT_EQ(cp, expected);
    append_utf8(rebuilt, cp);
  }
  EXPECT_EQ(pos, text.size());
  EXPECT_EQ(rebuilt, text);
}

}  // namespace
}  // namespace lowbit::text::unicode
