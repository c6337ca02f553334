// The decoders alone: how each rewrites a list of token strings.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/text/tokenizer_files.h"
#include "text/hf/decoders.h"
#include "text/hf/json_field.h"

namespace lowbit::text::hf {
namespace {

using lowbit::testing::byte_level;
using lowbit::testing::json;
using Tokens = std::vector<std::string>;

Tokens decode(const json& config, Tokens tokens) {
  read_decoder(JsonField(config, "test.json"))->apply(tokens);
  return tokens;
}

TEST(Decoders, ByteLevelJoinsBytesAcrossTokens) {
  // 日 (E6 97 A5) split over two tokens comes back whole; a token outside the
  // byte alphabet (an added token with '日' itself) is kept as written.
  EXPECT_EQ(decode({{"type", "ByteLevel"}}, {byte_level("a \xE6"), byte_level("\x97\xA5"), "\u65E5"}),
            (Tokens{"a \u65E5\u65E5"}));
  EXPECT_EQ(decode({{"type", "ByteLevel"}}, {byte_level("\xE6\x97")}), (Tokens{"\uFFFD"}));
}

TEST(Decoders, MetaspaceStripFuseByteFallback) {
  const std::string bar = "\u2581";
  EXPECT_EQ(decode({{"type", "Metaspace"}, {"replacement", bar}, {"prepend_scheme", "always"}},
                   {bar + "Hey", bar + "friend!"}),
            (Tokens{"Hey", " friend!"}));
  EXPECT_EQ(decode({{"type", "Metaspace"}, {"replacement", bar}, {"prepend_scheme", "never"}}, {bar + "Hey"}),
            (Tokens{" Hey"}));
  EXPECT_EQ(decode({{"type", "Strip"}, {"content", "H"}, {"start", 1}, {"stop", 0}}, {"Hey", "HHH"}),
            (Tokens{"ey", "HH"}));
  EXPECT_EQ(decode({{"type", "Strip"}, {"content", "y"}, {"start", 0}, {"stop", 2}}, {"Heyyy", "y"}),
            (Tokens{"Hey", ""}));
  EXPECT_EQ(decode({{"type", "Fuse"}}, {"a", "b", "c"}), (Tokens{"abc"}));
  // <0xE5> <0x8F> <0xAB> spell 叫; a lone lead byte is U+FFFD; "<0xZZ>" is no byte.
  EXPECT_EQ(decode({{"type", "ByteFallback"}}, {"<0xE5>", "<0x8F>", "<0xAB>", "a", "<0xE5>", "<0xZZ>"}),
            (Tokens{"\u53EB", "a", "\uFFFD", "<0xZZ>"}));
  EXPECT_EQ(decode({{"type", "BPEDecoder"}, {"suffix", "</w>"}}, {"hel", "lo</w>", "you</w>"}),
            (Tokens{"hel", "lo ", "you"}));
}

}  // namespace
}  // namespace lowbit::text::hf
