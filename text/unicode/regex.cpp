#include "text/unicode/regex.h"

#include <unicode/regex.h>
#include <unicode/unistr.h>

#include "text/error.h"
#include "text/unicode/utf8.h"

namespace lowbit::text::unicode {
namespace {

// Oniguruma (Unicode, Ruby syntax) and ICU read most escapes alike (\s is the
// White_Space property in both, \d is Nd); these differ. Oniguruma's \w is
// letters, marks, Nd and Pc while ICU's is Alphabetic (adding Nl such as Ⅻ)
// plus the joiners; its \h is a hex digit, ICU's horizontal space. The
// replacements are sets, valid inside and outside brackets alike.
std::string to_icu_syntax(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '\\' || i + 1 == pattern.size()) {
      out.push_back(pattern[i]);
      continue;
    }
    const char escaped = pattern[++i];
    switch (escaped) {
      case 'w': out += "[\\p{L}\\p{M}\\p{Nd}\\p{Pc}]"; break;
      case 'W': out += "[^\\p{L}\\p{M}\\p{Nd}\\p{Pc}]"; break;
      case 'h': out += "[0-9a-fA-F]"; break;
      case 'H': out += "[^0-9a-fA-F]"; break;
      default:
        out.push_back('\\');
        out.push_back(escaped);
    }
  }
  return out;
}

}  // namespace

struct Regex::Compiled {
  std::unique_ptr<icu::RegexPattern> pattern;
};

Regex::Regex(const std::string& oniguruma_pattern) : pattern_(oniguruma_pattern) {
  UParseError where{};
  UErrorCode status = U_ZERO_ERROR;
  // Ruby's ^ and $ match at line boundaries: ICU's multiline mode.
  std::unique_ptr<icu::RegexPattern> compiled(icu::RegexPattern::compile(
      icu::UnicodeString::fromUTF8(to_icu_syntax(oniguruma_pattern)), UREGEX_MULTILINE, where,
      status));
  if (U_FAILURE(status))
    throw_error("cannot compile the regular expression \"", oniguruma_pattern, "\" (ICU: ",
                u_errorName(status), " near character ", where.offset, ")");
  compiled_ = std::make_unique<const Compiled>(Compiled{std::move(compiled)});
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

std::vector<Span> Regex::find_all(std::string_view text) const {
  const icu::UnicodeString utf16 =
      icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> matcher(compiled_->pattern->matcher(utf16, status));
  // No cap on the backtracking stack: a long run of spaces under \s+(?!\S)
  // would otherwise overflow ICU's default 8 MB and fail the encode.
  if (U_SUCCESS(status)) matcher->setStackLimit(0, status);
  if (U_FAILURE(status))
    throw_error("ICU cannot run the regular expression \"", pattern_, "\" (", u_errorName(status), ")");

  // Matches arrive in order, so one cursor walks UTF-16 units and bytes together.
  int32_t unit = 0;
  size_t byte = 0;
  const auto byte_offset = [&](int32_t target) {
    while (unit < target) {
      const size_t length = sequence_length(static_cast<unsigned char>(text[byte]));
      byte += length;
      unit += length == 4 ? 2 : 1;
    }
    return byte;
  };
  std::vector<Span> matches;
  while (matcher->find(status)) {
    const int32_t start = matcher->start(status);
    const int32_t end = matcher->end(status);
    if (U_FAILURE(status)) break;
    const size_t begin = byte_offset(start);
    if (start == end && !matches.empty() && matches.back().end == begin) continue;
    matches.push_back({begin, byte_offset(end)});
  }
  if (U_FAILURE(status))
    throw_error("the regular expression \"", pattern_, "\" failed on the text (ICU: ",
                u_errorName(status), ")");
  return matches;
}

}  // namespace lowbit::text::unicode
