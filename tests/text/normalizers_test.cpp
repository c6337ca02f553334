// The normalizers alone, against Unicode's own tables (NFC/NFKC/NFD) and the
// Rust library's per-character rules (Lowercase, Strip, Prepend, Replace).
#include <string>

#include <gtest/gtest.h>

#include "text/hf/json_field.h"
#include "text/hf/normalizers.h"

namespace lowbit::text::hf {
namespace {

using nlohmann::json;

std::string normalize(const json& config, std::string text) {
  read_normalizer(JsonField(config, "test.json"))->apply(text);
  return text;
}

TEST(Normalizers, UnicodeForms) {
  // é precomposed (U+00E9) and decomposed (e U+0301); the ligature ﬁ (U+FB01)
  // is a compatibility character: only the K forms replace it.
  EXPECT_EQ(normalize({{"type", "NFC"}}, "e\u0301 \uFB01"), "\u00E9 \uFB01");
  EXPECT_EQ(normalize({{"type", "NFD"}}, "\u00E9"), "e\u0301");
  EXPECT_EQ(normalize({{"type", "NFKC"}}, "e\u0301 \uFB01"), "\u00E9 fi");
  EXPECT_EQ(normalize({{"type", "NFKD"}}, "\u00E9\uFB01"), "e\u0301fi");
}

TEST(Normalizers, LowercaseCharacterByCharacter) {
  // Σ at a word's end stays σ (no final-sigma context), İ becomes i + U+0307.
  EXPECT_EQ(normalize({{"type", "Lowercase"}}, "\u00C0B \u0130 \u039F\u03A3"), "\u00E0b i\u0307 \u03BF\u03C3");
}

TEST(Normalizers, StripPrependReplaceSequence) {
  EXPECT_EQ(normalize({{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}}, " \u3000a b\t\n"), "a b");
  EXPECT_EQ(normalize({{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}}, "  a  "), "  a");
  EXPECT_EQ(normalize({{"type", "Prepend"}, {"prepend", "\u2581"}}, "a"), "\u2581a");
  EXPECT_EQ(normalize({{"type", "Prepend"}, {"prepend", "\u2581"}}, ""), "");
  EXPECT_EQ(normalize({{"type", "Replace"}, {"pattern", {{"String", "  "}}}, {"content", "_"}}, "a     b"), "a__ b");
  EXPECT_EQ(normalize({{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}}, "a \t\n b"), "a b");
  const json sequence = {{"type", "Sequence"},
                         {"normalizers", {{{"type", "Lowercase"}}, {{"type", "Prepend"}, {"prepend", "#"}}}}};
  EXPECT_EQ(normalize(sequence, "AB"), "#ab");
}

}  // namespace
}  // namespace lowbit::text::hf
