// The regular expressions of tokenizer.json files (Split and Replace patterns,
// GPT-2's pre-tokenizer pattern), run with ICU. The files are written for
// Oniguruma, which the Rust library uses; the few escapes whose meaning differs
// in ICU are rewritten so that matches agree (see regex.cpp).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::text::unicode {

struct Span {
  size_t begin;  // byte offsets into the searched text
  size_t end;
};

class Regex {
 public:
  // Throws Error naming the pattern and ICU's complaint when it does not compile.
  explicit Regex(const std::string& oniguruma_pattern);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Every non-overlapping match of valid UTF-8 `text`, leftmost first, as the
  // Rust library's find_iter: an empty match right where the previous one
  // ended is skipped.
  std::vector<Span> find_all(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Compiled;
  std::string pattern_;
  std::unique_ptr<const Compiled> compiled_;
};

}  // namespace lowbit::text::unicode
