// The pre-tokenizers alone: which pieces each cuts a text into. The pieces are
// worked out by hand from the patterns (comments give the reasoning where the
// alternatives compete).
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"
#include "tests/text/tokenizer_files.h"
#include "text/error.h"
#include "text/hf/json_field.h"
#include "text/hf/pre_tokenizers.h"

namespace lowbit::text::hf {
namespace {

using lowbit::testing::byte_level;
using lowbit::testing::json;
using Pieces = std::vector<std::string>;

Pieces pre_tokenize(const json& config, const std::string& text, bool at_text_start = true) {
  const std::unique_ptr<PreTokenizer> pre_tokenizer = read_pre_tokenizer(JsonField(config, "test.json"));
  std::vector<Piece> pieces = {{text, at_text_start}};
  pre_tokenizer->apply(pieces);
  Pieces out;
  for (const Piece& piece : pieces) out.push_back(piece.text);
  return out;
}

json split(const std::string& regex, const std::string& behavior, bool invert = false) {
  return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", behavior}, {"invert", invert}};
}

const std::string kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kMixed = "Hello, World! 12345 don't\n\n  x";

TEST(PreTokenizers, SplitBehaviors) {
  // Inverted, the words and punctuation runs are kept and the spaces between
  // them are the delimiters that each behavior treats its own way.
  const std::string words = R"(\w+|[^\w\s]+)";
  const std::string text = "How are you doing?";
  EXPECT_EQ(pre_tokenize(split(words, "Removed", true), text), (Pieces{"How", "are", "you", "doing", "?"}));
  EXPECT_EQ(pre_tokenize(split(words, "Isolated", true), text),
            (Pieces{"How", " ", "are", " ", "you", " ", "doing", "?"}));
  EXPECT_EQ(pre_tokenize(split(words, "MergedWithPrevious", true), text),
            (Pieces{"How ", "are ", "you ", "doing", "?"}));
  EXPECT_EQ(pre_tokenize(split(words, "MergedWithNext", true), text),
            (Pieces{"How", " are", " you", " doing", "?"}));
  // "doing" and "?" are both non-delimiters in a row: one piece.
  EXPECT_EQ(pre_tokenize(split(words, "Contiguous", true), text),
            (Pieces{"How", " ", "are", " ", "you", " ", "doing?"}));
  // A literal pattern, not inverted.
  const json dash = {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", "Removed"}, {"invert", false}};
  EXPECT_EQ(pre_tokenize(dash, "a-b--c."), (Pieces{"a", "b", "c."}));
}

TEST(PreTokenizers, Llama3Pattern) {
  // " 12345": the space is no letter's prefix and \s+(?!\S) fails before "1",
  // so it stands alone; digits go by three. "\n\n  x": \s*[\r\n]+ backtracks
  // to "\n\n"; of the two spaces \s+(?!\S) keeps one for " x".
  EXPECT_EQ(pre_tokenize(split(kLlama3, "Isolated"), kMixed),
            (Pieces{"Hello", ",", " World", "!", " ", "123", "45", " don", "'t", "\n\n", " ", " x"}));
  EXPECT_EQ(pre_tokenize(split(kLlama3, "Isolated"), "WE'LL"), (Pieces{"WE", "'LL"}));
}

// A pattern whose backtracking grows exponentially with the text stops at
// ICU's step limit with an error naming it, instead of running on (without
// the limit 40 letters take longer than 20 s, each letter more 1.6 times as
// long). A megabyte
// of spaces under Llama 3's pattern, whose \s*[\r\n]+ backtracks over the
// whole run, stays well inside the limit, which grows with the text.
TEST(PreTokenizers, BacktrackingHasAStepLimitThatGrowsWithTheText) {
  lowbit::testing::expect_error_all<Error>(
      [&] { pre_tokenize(split("(a|aa)*b", "Isolated"), std::string(40, 'a')); },
      {"(a|aa)*b", "step limit", "40 bytes"});
  const std::string spaces(1 << 20, ' ');
  EXPECT_EQ(pre_tokenize(split(kLlama3, "Isolated"), spaces + "x"), (Pieces{spaces.substr(1), " x"}));
}

TEST(PreTokenizers, WordClassIsOnigurumas) {
  // Oniguruma's \w is letters, marks, Nd and Pc: the Roman numeral Ⅻ (U+216B,
  // Nl) is not a word character there, though ICU's \w (Alphabetic) has it.
  EXPECT_EQ(pre_tokenize(split(R"(\w+)", "Isolated"), "a\u216Bb"), (Pieces{"a", "\u216B", "b"}));
}

TEST(PreTokenizers, Qwen2Pattern) {
  EXPECT_EQ(pre_tokenize(split(kQwen2, "Isolated"), kMixed),
            (Pieces{"Hello", ",", " World", "!", " ", "1", "2", "3", "4", "5", " don", "'t", "\n\n", " ", " x"}));
}

TEST(PreTokenizers, ByteLevelWithGpt2Pattern) {
  const json config = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  // " ?\p{N}+" keeps " 12345" whole; without \s*[\r\n]+, "\s+(?!\S)" takes
  // "\n\n " and leaves " x".
  Pieces expected;
  for (const std::string piece : {"Hello", ",", " World", "!", " 12345", " don", "'t", "\n\n ", " x"})
    expected.push_back(byte_level(piece));
  EXPECT_EQ(pre_tokenize(config, kMixed), expected);
  // \s is the White_Space property, with U+000B and U+0085: before a letter a
  // run of them is "\s+(?!\S)" then "\s+", one each, not one
  // [^\s\p{L}\p{N}]+ piece.
  EXPECT_EQ(pre_tokenize(config, "a\v\vb"),
            (Pieces{"a", byte_level("\v"), byte_level("\v"), "b"}));
  EXPECT_EQ(pre_tokenize(config, "a\u0085\u0085b"),
            (Pieces{"a", byte_level("\u0085"), byte_level("\u0085"), "b"}));
  // add_prefix_space puts a space before a piece that lacks one.
  json prefixed = config;
  prefixed["add_prefix_space"] = true;
  EXPECT_EQ(pre_tokenize(prefixed, "Hi you"), (Pieces{byte_level(" Hi"), byte_level(" you")}));
  EXPECT_EQ(pre_tokenize(prefixed, " Hi"), (Pieces{byte_level(" Hi")}));
  // Without the regex: one piece, every byte mapped.
  json whole = config;
  whole["use_regex"] = false;
  EXPECT_EQ(pre_tokenize(whole, "a b\n"), (Pieces{byte_level("a b\n")}));
}

TEST(PreTokenizers, Metaspace) {
  const std::string bar = "\u2581";
  json config = {{"type", "Metaspace"}, {"replacement", bar}, {"prepend_scheme", "always"}, {"split", true}};
  // "▁Hey▁▁▁friend!": each ▁ opens a piece.
  EXPECT_EQ(pre_tokenize(config, "Hey   friend!"),
            (Pieces{bar + "Hey", bar, bar, bar + "friend!"}));
  config["prepend_scheme"] = "never";
  EXPECT_EQ(pre_tokenize(config, "Hey friend"), (Pieces{"Hey", bar + "friend"}));
  config["prepend_scheme"] = "first";
  config["split"] = false;
  EXPECT_EQ(pre_tokenize(config, "Hey friend", true), (Pieces{bar + "Hey" + bar + "friend"}));
  EXPECT_EQ(pre_tokenize(config, "Hey friend", false), (Pieces{"Hey" + bar + "friend"}));
  // The older spelling: add_prefix_space instead of prepend_scheme.
  const json legacy = {{"type", "Metaspace"}, {"replacement", bar}, {"add_prefix_space", true}};
  EXPECT_EQ(pre_tokenize(legacy, "a b"), (Pieces{bar + "a", bar + "b"}));
}

TEST(PreTokenizers, DigitsWhitespaceAndSequences) {
  const json individual = {{"type", "Digits"}, {"individual_digits", true}};
  const json runs = {{"type", "Digits"}, {"individual_digits", false}};
  EXPECT_EQ(pre_tokenize(individual, "a12b345"), (Pieces{"a", "1", "2", "b", "3", "4", "5"}));
  EXPECT_EQ(pre_tokenize(runs, "a12b345"), (Pieces{"a", "12", "b", "345"}));
  // Any numeric character counts: Arabic-Indic three (Nd) and one half (No).
  EXPECT_EQ(pre_tokenize(individual, "x\u0663\u00BD"), (Pieces{"x", "\u0663", "\u00BD"}));

  EXPECT_EQ(pre_tokenize({{"type", "Whitespace"}}, "Hey man!"), (Pieces{"Hey", "man", "!"}));
  EXPECT_EQ(pre_tokenize({{"type", "WhitespaceSplit"}}, "Hey,\u3000man!"), (Pieces{"Hey,", "man!"}));

  const json sequence = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "WhitespaceSplit"}}, runs}}};
  EXPECT_EQ(pre_tokenize(sequence, "ab12 34cd"), (Pieces{"ab", "12", "34", "cd"}));
}

}  // namespace
}  // namespace lowbit::text::hf
