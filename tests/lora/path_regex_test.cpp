#include "lora/path_regex.h"

#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <string>
#include <vector>

namespace lowbit::lora {
namespace {

std::string error_of(const std::string& pattern) {
  try {
    PathRegex re(pattern);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

// A random pattern in the part of the syntax where ECMAScript (std::regex)
// and Python's re agree, over a small alphabet so that matches are common.
class PatternMaker {
 public:
  explicit PatternMaker(uint32_t seed) : rng_(seed) {}

  // `in_look`: inside a lookahead, where libstdc++'s std::regex reads ^, \b
  // and \B as if the text began there ("a(?!\b)" does not find the "a" of
  // "a_", nor "a(?!^)" that of "a", while Python's re does), so they are
  // left out.
  std::string pattern(int depth, bool in_look = false) {
    std::string out;
    const int items = pick(1, 3);
    for (int i = 0; i < items; ++i) out += item(depth, in_look);
    if (depth > 0 && pick(0, 3) == 0) out += "|" + pattern(depth - 1, in_look);
    return out;
  }
  std::string text() {
    static const char kAlphabet[] = "ab._0";
    std::string t;
    const int length = pick(0, 8);
    for (int i = 0; i < length; ++i) t.push_back(kAlphabet[pick(0, 4)]);
    return t;
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  std::string atom(int depth, bool in_look) {
    static const std::vector<std::string> kAtoms = {"a", "b", "\\.", "_", "0", ".", "[ab]", "[^a]",
                                                    "[a-c_]", "\\d", "\\w", "\\W", "[.]"};
    const int kind = depth > 0 ? pick(0, 9) : pick(0, 5);
    if (kind <= 5) return kAtoms[static_cast<size_t>(pick(0, int(kAtoms.size()) - 1))];
    if (kind == 6) return "(?=" + pattern(depth - 1, true) + ")";
    if (kind == 7) return "(?!" + pattern(depth - 1, true) + ")";
    return (kind == 8 ? "(" : "(?:") + pattern(depth - 1, in_look) + ")";
  }
  std::string item(int depth, bool in_look) {
    switch (pick(0, 14)) {
      case 0: return in_look ? "$" : "^";
      case 1: return "$";
      case 2: return in_look ? "$" : "\\b";
      case 3: return in_look ? "$" : "\\B";
      default: break;
    }
    std::string a = atom(depth, in_look);
    // Lookaheads are not repeated (Python refuses "nothing to repeat").
    if (a.rfind("(?=", 0) == 0 || a.rfind("(?!", 0) == 0) return a;
    static const std::vector<std::string> kQuantifiers = {"",    "",      "",      "*",     "+", "?",
                                                          "{2}", "{1,3}", "{0,}", "*?", "+?"};
    return a + kQuantifiers[static_cast<size_t>(pick(0, int(kQuantifiers.size()) - 1))];
  }

  std::mt19937 rng_;
};

// std::regex (ECMAScript, backtracking) is the independent reference: over
// 600 random patterns and 24 texts each, whole-text and anywhere matches
// must agree exactly (a boolean, so there is no tolerance).
TEST(PathRegex, AgreesWithStdRegexOnRandomPatterns) {
  PatternMaker maker(20261203);
  int matched = 0, compared = 0;
  for (int i = 0; i < 600; ++i) {
    const std::string pattern = maker.pattern(2);
    const PathRegex mine(pattern);
    const std::regex reference(pattern, std::regex::ECMAScript);
    for (int t = 0; t < 24; ++t) {
      const std::string text = maker.text();
      const bool full = std::regex_match(text, reference);
      ASSERT_EQ(mine.full_match(text), full) << "full match of /" << pattern << "/ on '" << text << "'";
      ASSERT_EQ(mine.search(text), std::regex_search(text, reference))
          << "search of /" << pattern << "/ on '" << text << "'";
      matched += full;
      ++compared;
    }
  }
  // The comparison means something only if both outcomes are common.
  EXPECT_GT(matched, compared / 20);
  EXPECT_LT(matched, compared * 19 / 20);
}

TEST(PathRegex, ModulePathPatternsAsPeftWritesThem) {
  const std::string path = "model.layers.12.self_attn.q_proj";
  EXPECT_TRUE(PathRegex(R"(.*\.(q_proj|v_proj))").full_match(path));
  EXPECT_TRUE(PathRegex(R"(^model\.layers\.\d+\.self_attn\.(q|k|v)_proj$)").full_match(path));
  EXPECT_FALSE(PathRegex(R"(model\.layers\.\d\.self_attn\.q_proj)").full_match(path));
  EXPECT_TRUE(PathRegex(R"((?!.*lm_head).*proj)").full_match(path));
  EXPECT_FALSE(PathRegex(R"((?!.*self_attn).*proj)").full_match(path));
  EXPECT_TRUE(PathRegex(R"((?i)MODEL\..*Q_PROJ)").full_match(path));
  EXPECT_TRUE(PathRegex(R"(model(?i:\.LAYERS)\..*)").full_match(path));
  EXPECT_FALSE(PathRegex(R"((?i:model)\.LAYERS\..*)").full_match(path));
  EXPECT_TRUE(PathRegex(R"((?P<layer>layers)\.1{1,2}2\..*)").search(path));
  EXPECT_TRUE(PathRegex(R"(model(?#the root)\.layers.*)").full_match(path));
  EXPECT_TRUE(PathRegex(R"([]x]*a{}\x41)").full_match("]]a{}A"));  // Python's literal ']' and '{'
  EXPECT_TRUE(PathRegex(R"(a{,2}b)").full_match("aab"));
  EXPECT_FALSE(PathRegex(R"(a{,2}b)").full_match("aaab"));
  EXPECT_TRUE(PathRegex(R"([^\d.]+)").full_match("q_proj"));
  EXPECT_FALSE(PathRegex(R"(.)").full_match("\n"));
  EXPECT_TRUE(PathRegex(R"((?s).)").full_match("\n"));
}

// Patterns that make a backtracking matcher take exponential time in the
// length of the text. Here each is one pass over the text: the test would
// not finish within CTest's timeout otherwise.
TEST(PathRegex, PatternsThatStallBacktrackingRunInOnePass) {
  const std::string text(64, 'a');
  struct Case {
    const char* pattern;
    bool found_before_a_b;  // whether search(text + "b") finds it
  };
  for (const Case& c : {Case{"(a*)*b", true}, Case{"(a|aa)*c", false}, Case{"((a+)+)+$x", false},
                        Case{"(a|a)*(a|a)*(a|a)*b", true}, Case{"(.*){20}b", true},
                        Case{"(?=(a*)*b)a*", true}, Case{"((?!(a*)*b)a)*b", true}}) {
    const PathRegex re(c.pattern);
    EXPECT_FALSE(re.full_match(text)) << c.pattern;
    EXPECT_FALSE(re.search(text + "!")) << c.pattern;
    EXPECT_EQ(re.search(text + "b"), c.found_before_a_b) << c.pattern;
  }
  // 2000 lookaheads in a loop: each is run once per position, over its own
  // few states (not over the whole program of 6000 instructions).
  std::string looks = "(?:";
  for (int i = 0; i < 2000; ++i) looks += "(?=.)";
  const PathRegex many(looks + ".)*");
  EXPECT_TRUE(many.full_match(text));
  EXPECT_FALSE(many.full_match(text + "\n"));
}

TEST(PathRegex, RefusesWhatItCannotRunByName) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"(a)\\1", "backreferences are not supported at character 3"},
      {"(?P<x>a)(?P=x)", "backreferences are not supported"},
      {"(?<=a)b", "lookbehind assertions are not supported"},
      {"(?<!a)b", "lookbehind assertions are not supported"},
      {"(ab", "missing ), unterminated subpattern at character 0"},
      {"ab)", "unbalanced parenthesis at character 2"},
      {"[ab", "unterminated character set"},
      {"*a", "nothing to repeat at character 0"},
      {"^*", "nothing to repeat"},
      {"a**", "multiple repeat"},
      {"a{3,2}", "min repeat greater than max repeat"},
      {"a{1001}", "a repetition count above 1000"},
      {"(a{1000}){1000}", "more than 50000 states"},
      {"[z-a]", "a bad character range"},
      {"[\\d-z]", "a bad character range"},
      {"\\q", "a bad escape \\q"},
      {"a\\", "a bad escape (end of pattern)"},
      {"\\x4", "incomplete escape \\x"},
      {"\\u00e9", "non-ASCII"},
      {"a(?i)b", "global flags such as (?i) must be at the start"},
      {"(?x)a b", "the flag 'x' is not supported"},
      {"(?%a)", "unknown extension (?%"},
      {"(?P<>a)", "missing group name"},
      {std::string(300, '(') + std::string(300, ')'), "groups nested deeper than 200"},
      {std::string(70000, 'a'), "a pattern of 70000 characters (at most 65536)"},
  };
  for (const auto& [pattern, message] : cases)
    EXPECT_NE(error_of(pattern).find(message), std::string::npos)
        << "/" << pattern << "/ gave: " << error_of(pattern);
}

}  // namespace
}  // namespace lowbit::lora
