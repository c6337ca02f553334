// The regular expressions that pick modules and parameters by name (PEFT's
// target_modules, QuantizeConfig's patterns, a recipe's fp32_params), run
// without backtracking. The pattern compiles to a Thompson NFA whose states
// are followed together, one set per character of the text, so a match costs
// at most (program size) x (text length) steps however the pattern is
// written. std::regex and Python's re backtrack: a pattern such as "(a*)*b"
// in a config file stalls them for longer than anyone waits, even on a
// 30-character module path.
//
// The syntax is Python's re, which PEFT's adapter_config.json is written for,
// and on these features ECMAScript reads it the same way: literals, escapes
// (\. \d \w \s and their negations, \t \n \xHH ...), . and [...] sets with
// ranges, groups ((...), (?:...), (?P<name>...), (?<name>...)), |, the
// quantifiers * + ? {n} {n,} {,m} {n,m} (greedy or lazy, counts up to 1000),
// the anchors ^ $ \A \Z \b \B, lookaheads (?=...) (?!...), comments (?#...),
// and the flags i and s (also a, m, u, which change nothing for these texts)
// at the start or scoped as (?i:...). Backreferences, lookbehinds and other
// extensions are refused by name. Texts are bytes: \d \w \s are their ASCII
// sets and . matches one byte.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::lora {

class PathRegex {
 public:
  // Throws std::invalid_argument saying what is wrong and at which character
  // (counted from 0).
  explicit PathRegex(std::string_view pattern);

  // Whether the pattern matches all of `text` (Python's re.fullmatch).
  bool full_match(std::string_view text) const;
  // Whether it matches somewhere in `text` (Python's re.search).
  bool search(std::string_view text) const;

  // The longest pattern, the longest program it may compile to, and the
  // largest count of a {n,m} quantifier (RE2's limit).
  static constexpr size_t kMaxPattern = 65536;
  static constexpr size_t kMaxProgram = 50000;
  static constexpr int kMaxRepeat = 1000;

  using ByteSet = std::array<uint64_t, 4>;
  enum class Op : uint8_t { kByte, kSplit, kJump, kBegin, kEnd, kWordBoundary, kNotWordBoundary, kLook, kMatch };
  struct Inst {
    Op op;
    bool negate = false;  // kLook: (?!...)
    uint32_t x = 0;       // kByte: set index; kSplit, kJump: target; kLook: the sub-program
    uint32_t y = 0;       // kSplit: second target; kLook: where a passed assertion goes on
  };

 private:
  struct Run;
  bool run(Run& r, uint32_t entry, size_t begin, bool anywhere, bool to_end) const;

  std::vector<Inst> program_;
  std::vector<ByteSet> sets_;
};

}  // namespace lowbit::lora
