// Byte-level BPE tokenizer.json files (GPT-2, Llama 3, Qwen2 layouts) with a
// hand-made vocabulary: every byte b is token b, and fourteen merges build the
// tokens from 256 up. Each expected id list below is derived by hand in the
// comment beside it: pre-tokenize with the file's pattern, map bytes, then
// merge the adjacent pair of lowest rank (leftmost first) until none applies.
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"
#include "tests/text/tokenizer_files.h"
#include "text/error.h"
#include "text/tokenizer.h"

namespace lowbit::text {
namespace {

using lowbit::testing::byte_level;
using lowbit::testing::json;
using lowbit::testing::ScratchDir;
using Ids = std::vector<int32_t>;

// Llama 3's and Qwen2's Split patterns (their tokenizer.json files; Qwen2 cuts
// digits one at a time instead of up to three).
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Rank order is list order. "Ġ" is the space byte, "Ċ" the newline.
std::vector<std::pair<std::string, std::string>> merges() {
  const std::string sp = byte_level(" "), nl = byte_level("\n");
  return {
      {sp, "t"},                                      // 0 -> 256 "Ġt"
      {"h", "e"},                                     // 1 -> 257 "he"
      {sp + "t", "he"},                               // 2 -> 258 "Ġthe"
      {"i", "n"},                                     // 3 -> 259 "in"
      {sp, sp},                                       // 4 -> 260 "ĠĠ"
      {"'", "s"},                                     // 5 -> 261 "'s"
      {"1", "2"},                                     // 6 -> 262 "12"
      {byte_level("\xC3"), byte_level("\xA9")},       // 7 -> 263 "é" (C3 A9)
      {nl, nl},                                       // 8 -> 264 "ĊĊ"
      {"'", "S"},                                     // 9 -> 265 "'S"
      {byte_level("\xE6"), byte_level("\x97")},       // 10 -> 266 (E6 97)
      {byte_level("\xE6\x97"), byte_level("\xA5")},   // 11 -> 267 "日" (E6 97 A5)
      {"b", "c"},                                     // 12 -> 268 "bc"
      {"a", "b"},                                     // 13 -> 269 "ab"
  };
}

enum class Layout { Llama3, Qwen2, Gpt2 };

json byte_level_tokenizer(Layout layout, bool merges_as_pairs = true, bool ignore_merges = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level(std::string(1, static_cast<char>(b)))] = b;
  int next = 256;
  for (const auto& [left, right] : merges()) vocab[left + right] = next++;
  vocab[byte_level(" hello")] = 270;  // a whole word no merge leads to
  // Real files number added tokens right after the model's (271 here); the
  // gap 271..299 lets the tests see how ids without a token are refused.
  json model = lowbit::testing::bpe_model(vocab, lowbit::testing::merges_json(merges(), merges_as_pairs));
  model["ignore_merges"] = ignore_merges;
  json file = lowbit::testing::tokenizer_json(model);

  const json byte_level_step = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  const auto split = [](const char* pattern) {
    return json{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}};
  };
  if (layout == Layout::Gpt2) {
    file["pre_tokenizer"] = byte_level_step;
    file["pre_tokenizer"]["use_regex"] = true;
  } else {
    const char* pattern = layout == Layout::Llama3 ? kLlama3Pattern : kQwen2Pattern;
    file["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split(pattern), byte_level_step}}};
  }
  if (layout == Layout::Qwen2) file["normalizer"] = {{"type", "NFC"}};
  file["decoder"] = byte_level_step;
  file["post_processor"] = {
      {"type", "Sequence"},
      {"processors", {byte_level_step, lowbit::testing::bos_template("<|begin_of_text|>", 300)}}};
  file["added_tokens"] = {
      lowbit::testing::added_token(300, "<|begin_of_text|>", true),
      lowbit::testing::added_token(301, "<|end_of_text|>", true),
      lowbit::testing::added_token(302, "<tool>", false, /*lstrip=*/true, /*rstrip=*/true),
      lowbit::testing::added_token(303, "cat", false, false, false, /*single_word=*/true),
      lowbit::testing::added_token(304, "<|end", false),
  };
  return file;
}

class ByteLevelBpe : public ::testing::Test {
 protected:
  std::unique_ptr<Tokenizer> load(Layout layout, bool merges_as_pairs = true, bool ignore_merges = false) {
    return load_tokenizer(lowbit::testing::write_json(
        dir_, "tokenizer.json", byte_level_tokenizer(layout, merges_as_pairs, ignore_merges)));
  }
  ScratchDir dir_;
};

TEST_F(ByteLevelBpe, MapsBytesLikeGpt2) {
  // Known points of GPT-2's table, checking the test's own helper.
  EXPECT_EQ(byte_level(" "), "\u0120");     // Ġ
  EXPECT_EQ(byte_level("\n"), "\u010A");    // Ċ
  EXPECT_EQ(byte_level(std::string(1, '\0')), "\u0100");
  EXPECT_EQ(byte_level("\xAD"), "\u0143");  // the last of the 68 moved bytes
  EXPECT_EQ(byte_level("A\xFF"), "A\u00FF");
}

TEST_F(ByteLevelBpe, EncodesWordsSpacesAndMergesInRankOrder) {
  const auto tok = load(Layout::Llama3);
  // "Hello": H e l l o, no merge applies (only "h e", lowercase).
  EXPECT_EQ(tok->encode("Hello", false), (Ids{72, 101, 108, 108, 111}));
  // "the" -> t he (rank 1); " the" -> Ġt h e (0) -> Ġt he (1) -> Ġthe (2).
  EXPECT_EQ(tok->encode("the the", false), (Ids{116, 257, 258}));
  // "in  the": \s+(?!\S) takes one of the two spaces, " the" the other.
  EXPECT_EQ(tok->encode("in  the", false), (Ids{259, 32, 258}));
  // "a   b": "a", "  " (ĠĠ, rank 4), " b".
  EXPECT_EQ(tok->encode("a   b", false), (Ids{97, 260, 32, 98}));
  // Leading and trailing runs of spaces.
  EXPECT_EQ(tok->encode("  the", false), (Ids{32, 258}));
  EXPECT_EQ(tok->encode("a  ", false), (Ids{97, 260}));
  // "abc": "b c" (rank 12) beats "a b" (rank 13) although it stands right.
  EXPECT_EQ(tok->encode("abc", false), (Ids{97, 268}));
  // "abab": two "a b" merges, leftmost first; both apply.
  EXPECT_EQ(tok->encode("abab", false), (Ids{269, 269}));
}

TEST_F(ByteLevelBpe, EncodesNewlinesDigitsAndContractionsLikeLlama3) {
  const auto tok = load(Layout::Llama3);
  // \s*[\r\n]+ keeps "\n\n" in one piece, which merges to ĊĊ.
  EXPECT_EQ(tok->encode("a\n\nb", false), (Ids{97, 264, 98}));
  // \p{N}{1,3}: "123" -> 12 3, "45" -> 4 5.
  EXPECT_EQ(tok->encode("12345", false), (Ids{262, 51, 52, 53}));
  // "121" -> 12 1, "2".
  EXPECT_EQ(tok->encode("1212", false), (Ids{262, 49, 50}));
  // "it" then the contraction "'s" (rank 5).
  EXPECT_EQ(tok->encode("it's", false), (Ids{105, 116, 261}));
  // (?i:...) takes "'S" as a contraction too; it merges by rank 9.
  EXPECT_EQ(tok->encode("IT'S", false), (Ids{73, 84, 265}));
}

TEST_F(ByteLevelBpe, EncodesUnicodeByItsBytes) {
  const auto tok = load(Layout::Llama3);
  // " café": one piece; é is C3 A9, merged by rank 7.
  EXPECT_EQ(tok->encode(" caf\u00E9", false), (Ids{32, 99, 97, 102, 263}));
  // 日 = E6 97 A5 merges (ranks 10, 11); 本 = E6 9C AC does not.
  EXPECT_EQ(tok->encode("\u65E5\u672C", false), (Ids{267, 230, 156, 172}));
  // U+1F600 = F0 9F 98 80, no merges.
  EXPECT_EQ(tok->encode("\U0001F600", false), (Ids{240, 159, 152, 128}));
  // Control bytes are tokens like any other.
  EXPECT_EQ(tok->encode(std::string("\0\x01\x7F", 3), false), (Ids{0, 1, 127}));
}

TEST_F(ByteLevelBpe, Gpt2PatternCutsDifferently) {
  const auto tok = load(Layout::Gpt2);
  // No \s*[\r\n]+: each newline is its own piece, so ĊĊ never forms.
  EXPECT_EQ(tok->encode("a\n\nb", false), (Ids{97, 10, 10, 98}));
  // \p{N}+: "1212" is one piece: 12 1 2 -> 12 12.
  EXPECT_EQ(tok->encode("1212", false), (Ids{262, 262}));
  // Contractions are case-sensitive: "'S" splits into "'" and "S".
  EXPECT_EQ(tok->encode("IT'S", false), (Ids{73, 84, 39, 83}));
  EXPECT_EQ(tok->encode("the the", false), (Ids{116, 257, 258}));
}

TEST_F(ByteLevelBpe, Qwen2CutsDigitsOneByOneAndComposesNfc) {
  const auto tok = load(Layout::Qwen2);
  EXPECT_EQ(tok->encode("1212", false), (Ids{49, 50, 49, 50}));
  // e + U+0301 COMBINING ACUTE becomes é (C3 A9) under NFC first.
  EXPECT_EQ(tok->encode("e\u0301", false), (Ids{263}));
}

TEST_F(ByteLevelBpe, TemplateAddsBos) {
  const auto tok = load(Layout::Llama3);
  EXPECT_EQ(tok->encode("Hello", true), (Ids{300, 72, 101, 108, 108, 111}));
  EXPECT_EQ(tok->encode("", true), (Ids{300}));
  EXPECT_EQ(tok->encode("", false), (Ids{}));
  EXPECT_EQ(tok->bos_id(), 300);  // no tokenizer_config.json: the template's token
  EXPECT_EQ(tok->eos_id(), std::nullopt);
  EXPECT_EQ(tok->pad_id(), std::nullopt);
}

TEST_F(ByteLevelBpe, SplitsAddedTokensOutFirst) {
  const auto tok = load(Layout::Llama3);
  // "Hi", <|end_of_text|>, "there" (t he r e).
  EXPECT_EQ(tok->encode("Hi<|end_of_text|>there", true), (Ids{300, 72, 105, 301, 116, 257, 114, 101}));
  // Longest match: "<|end_of_text|>" over its prefix "<|end"; the prefix alone still matches.
  EXPECT_EQ(tok->encode("x<|endy", false), (Ids{120, 304, 121}));
  // <tool> takes the spaces on both sides (lstrip, rstrip).
  EXPECT_EQ(tok->encode("a <tool> b", false), (Ids{97, 302, 98}));
  // single_word: "cat" alone or between non-word characters, never inside a word.
  EXPECT_EQ(tok->encode("cat", false), (Ids{303}));
  EXPECT_EQ(tok->encode("a cat.", false), (Ids{97, 32, 303, 46}));
  EXPECT_EQ(tok->encode("concat", false), (Ids{99, 111, 110, 99, 97, 116}));
}

TEST_F(ByteLevelBpe, IgnoreMergesTakesWholeWords) {
  // " hello" is token 270, which no merge chain builds.
  EXPECT_EQ(load(Layout::Llama3, true, true)->encode(" hello", false), (Ids{270}));
  // Without ignore_merges: Ġ h e l l o -> Ġ he l l o.
  EXPECT_EQ(load(Layout::Llama3, true, false)->encode(" hello", false), (Ids{32, 257, 108, 108, 111}));
}

TEST_F(ByteLevelBpe, BothMergeFormsGiveTheSameIds) {
  const auto pairs = load(Layout::Llama3, /*merges_as_pairs=*/true);
  const auto strings = load(Layout::Llama3, /*merges_as_pairs=*/false);
  for (const std::string s : {"the the", "abc", "12345", "a\n\nb", "it's", "\u65E5\u672C caf\u00E9"})
    EXPECT_EQ(pairs->encode(s), strings->encode(s)) << s;
  EXPECT_EQ(strings->encode("the the", false), (Ids{116, 257, 258}));
}

TEST_F(ByteLevelBpe, DecodesAndSkipsSpecialTokens) {
  const auto tok = load(Layout::Llama3);
  EXPECT_EQ(tok->decode({300, 72, 105, 301}), "<|begin_of_text|>Hi<|end_of_text|>");
  EXPECT_EQ(tok->decode({300, 72, 105, 301}, true), "Hi");
  // <tool> and cat are added but not special: kept.
  EXPECT_EQ(tok->decode({302, 303}, true), "<tool>cat");
  EXPECT_EQ(tok->decode({258, 267}), " the\u65E5");
  // Bytes that are not UTF-8 read as U+FFFD, one per maximal ill-formed part.
  EXPECT_EQ(tok->decode({230}), "\uFFFD");
  EXPECT_EQ(tok->decode({230, 156}), "\uFFFD");
  EXPECT_EQ(tok->decode({230, 156, 172}), "\u672C");
  EXPECT_EQ(tok->decode({}), "");
}

TEST_F(ByteLevelBpe, LooksUpTokensAndIds) {
  const auto tok = load(Layout::Llama3);
  EXPECT_EQ(tok->vocab_size(), 305);
  EXPECT_EQ(tok->token_to_id(byte_level(" the")), 258);
  EXPECT_EQ(tok->token_to_id("<|end_of_text|>"), 301);
  EXPECT_EQ(tok->token_to_id("zzz"), std::nullopt);
  EXPECT_EQ(tok->id_to_token(258), byte_level(" the"));
  EXPECT_EQ(tok->id_to_token(300), "<|begin_of_text|>");
  lowbit::testing::expect_error<Error>([&] { tok->id_to_token(280); }, "id 280 has no token");
}

TEST_F(ByteLevelBpe, RefusesIdsOutsideTheVocabulary) {
  const auto tok = load(Layout::Llama3);
  lowbit::testing::expect_error_all<Error>([&] { tok->decode({72, 305}); },
                                           {"decode", "id 305", "position 1", "[0, 305)"});
  lowbit::testing::expect_error_all<Error>([&] { tok->decode({-1}); }, {"id -1", "outside"});
  // Inside the range but a gap between the model's ids and the added ones.
  lowbit::testing::expect_error<Error>([&] { tok->decode({280}); }, "id 280 has no token");
}

TEST_F(ByteLevelBpe, RefusesTextThatIsNotUtf8) {
  const auto tok = load(Layout::Llama3);
  lowbit::testing::expect_error_all<Error>([&] { tok->encode("ab\xFF"); }, {"not UTF-8", "byte 2", "0xff"});
  // A surrogate encoded in UTF-8 (CESU) is not UTF-8 either.
  lowbit::testing::expect_error<Error>([&] { tok->encode("\xED\xA0\x80"); }, "byte 0");
}

// Random code points from ASCII (controls included), Latin-1, CJK and emoji.
std::string random_text(std::mt19937& rng) {
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x00, 0x7F}, {0x20, 0x7E}, {0x20, 0x7E}, {0x80, 0x7FF}, {0x3000, 0x9FFF}, {0x1F300, 0x1F6FF}, {0xE000, 0xFFFD}};
  std::string text;
  const int length = std::uniform_int_distribution<int>(0, 40)(rng);
  for (int i = 0; i < length; ++i) {
    const auto& [low, high] = ranges[std::uniform_int_distribution<size_t>(0, ranges.size() - 1)(rng)];
    const char32_t cp = std::uniform_int_distribution<char32_t>(low, high)(rng);
    if (cp < 0x80) {
      text.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      text += {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    } else if (cp < 0x10000) {
      text += {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
               static_cast<char>(0x80 | (cp & 0x3F))};
    } else {
      text += {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
               static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
  }
  return text;
}

TEST_F(ByteLevelBpe, DecodeInvertsEncode) {
  for (const Layout layout : {Layout::Llama3, Layout::Gpt2}) {
    const auto tok = load(layout);
    std::vector<std::string> texts = {"", " ", "  x  ", "\n\n\r\n\t", "Hi<|end_of_text|>there", "it's 12345",
                                      "\u65E5\u672C\u8A9E \U0001F600 caf\u00E9", "a cat. concat"};
    std::string all_ascii;
    for (int c = 0; c < 128; ++c) {
      texts.emplace_back(1, static_cast<char>(c));
      all_ascii.push_back(static_cast<char>(c));
    }
    texts.push_back(all_ascii);
    std::mt19937 rng(7);
    for (int i = 0; i < 300; ++i) texts.push_back(random_text(rng));
    for (const std::string& text : texts) {
      EXPECT_EQ(tok->decode(tok->encode(text, false)), text);
      // Skipping drops BOS, and would drop a special token written in the text.
      if (text.find("<|") == std::string::npos) {
        EXPECT_EQ(tok->decode(tok->encode(text, true), true), text);
      }
    }
  }
}

TEST_F(ByteLevelBpe, ConfigNamesSpecialTokensAndAddsEos) {
  lowbit::testing::write_json(dir_, "tokenizer.json", byte_level_tokenizer(Layout::Llama3));
  lowbit::testing::write_json(dir_, "tokenizer_config.json",
                              {{"bos_token", "<|begin_of_text|>"},
                               {"eos_token", {{"__type", "AddedToken"}, {"content", "<|end_of_text|>"}}},
                               {"pad_token", nullptr},
                               {"add_eos_token", true}});
  const auto tok = load_tokenizer(dir_.path());  // the directory: tokenizer.json is found there
  EXPECT_EQ(tok->bos_id(), 300);
  EXPECT_EQ(tok->eos_id(), 301);
  EXPECT_EQ(tok->pad_id(), std::nullopt);
  // add_bos_token is not given, so the template's BOS stays; EOS is appended.
  EXPECT_EQ(tok->encode("Hi", true), (Ids{300, 72, 105, 301}));
}

// The directory's files are written before loading, so this fixture skips load().
TEST(ByteLevelBpeConfig, FlagsReplaceTheTemplate) {
  ScratchDir dir;
  lowbit::testing::write_json(dir, "tokenizer.json", byte_level_tokenizer(Layout::Llama3));
  lowbit::testing::write_json(dir, "tokenizer_config.json",
                              {{"bos_token", "<|begin_of_text|>"}, {"add_bos_token", false}});
  EXPECT_EQ(load_tokenizer(dir.path())->encode("Hi", true), (Ids{72, 105}));
}

}  // namespace
}  // namespace lowbit::text
