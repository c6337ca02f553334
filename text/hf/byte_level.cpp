#include "text/hf/byte_level.h"

#include <array>

#include "text/unicode/utf8.h"

namespace lowbit::text::hf {
namespace {

bool stands_for_itself(unsigned b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

// 188 bytes stand for themselves, so the other 68 take U+0100..U+0143.
constexpr char32_t kEnd = 0x100 + 68;

struct Alphabet {
  std::array<std::string, 256> chars;
  std::array<int16_t, kEnd> bytes;  // -1: not in the alphabet

  Alphabet() {
    bytes.fill(-1);
    char32_t next_extra = 0x100;
    for (unsigned b = 0; b < 256; ++b) {
      const char32_t cp = stands_for_itself(b) ? char32_t(b) : next_extra++;
      unicode::append_utf8(chars[b], cp);
      bytes[cp] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet table;
  return table;
}

}  // namespace

const std::string& byte_level_char(uint8_t byte) { return alphabet().chars[byte]; }

std::optional<uint8_t> byte_level_byte(char32_t code_point) {
  if (code_point >= kEnd || alphabet().bytes[code_point] < 0) return std::nullopt;
  return static_cast<uint8_t>(alphabet().bytes[code_point]);
}

std::string to_byte_level(std::string_view text) {
  const Alphabet& table = alphabet();
  std::string out;
  out.reserve(text.size() * 2);
  for (const char c : text) out += table.chars[static_cast<uint8_t>(c)];
  return out;
}

}  // namespace lowbit::text::hf
