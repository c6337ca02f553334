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

// The step budget of a find_all on an empty text, in ICU's ticks (about a
// quarter of a second of backtracking on a 2-core Xeon VM).
constexpr int32_t kBaseTicks = 1000;

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
  // A cap on the backtracking work instead, so that a tokenizer.json whose
  // pattern nests quantifiers, such as (a|aa)*b, fails the encode within a
  // fraction of a second (uncapped, that one takes 0.5 s on 30 letters and
  // 1.6 times as long with each letter more). ICU counts the work in
  // ticks of 10,000 steps over all the matcher's finds; Llama 3's and GPT-2's
  // patterns take about one tick per 3,700 characters of the KJV text or of a
  // run of spaces, so a tick per 64 characters leaves 50 times that.
  if (U_SUCCESS(status)) matcher->setTimeLimit(kBaseTicks + utf16.length() / 64, status);
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
  if (status == U_REGEX_TIME_OUT)
    throw_error("the regular expression \"", pattern_, "\" backtracked past its step limit on a text of ",
                text.size(), " bytes (a pattern with nested quantifiers, such as (a*)*, can take time "
                "exponential in the text's length)");
  if (U_FAILURE(status))
    throw_error("the regular expression \"", pattern_, "\" failed on the text (ICU: ",
                u_errorName(status), ")");
  return matches;
}

}  // namespace lowbit::text::unicode
