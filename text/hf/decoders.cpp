#include "text/hf/decoders.h"

#include <optional>
#include <utility>

#include "text/hf/byte_level.h"
#include "text/hf/pattern.h"
#include "text/hf/sequence.h"
#include "text/unicode/utf8.h"

namespace lowbit::text::hf {
namespace {

// Code points back to bytes, all tokens at once so that a character split
// over several tokens comes back whole; a token with any code point outside
// the alphabet (an added token, say) is kept as its own UTF-8. The bytes are
// then read as UTF-8 with U+FFFD for what is not (byte_level.rs).
class ByteLevel final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    std::string token_bytes;
    for (const std::string& token : tokens) {
      token_bytes.clear();
      bool in_alphabet = true;
      for (size_t pos = 0; pos < token.size() && in_alphabet;) {
        const std::optional<uint8_t> byte = byte_level_byte(unicode::next_code_point(token, pos));
        if (byte) token_bytes.push_back(static_cast<char>(*byte));
        in_alphabet = byte.has_value();
      }
      bytes += in_alphabet ? token_bytes : token;
    }
    tokens.assign(1, unicode::utf8_lossy(bytes));
  }
};

// The replacement character becomes a space, except that the first token
// drops it when a prefix was prepended (metaspace.rs).
class Metaspace final : public Decoder {
 public:
  Metaspace(char32_t replacement, bool prepended) : prepended_(prepended) {
    unicode::append_utf8(replacement_, replacement);
  }
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string with = (i == 0 && prepended_) ? "" : " ";
      std::string& token = tokens[i];
      std::string out;
      size_t done = 0;
      for (size_t at = token.find(replacement_); at != std::string::npos;
           at = token.find(replacement_, done)) {
        out.append(token, done, at - done);
        out += with;
        done = at + replacement_.size();
      }
      out.append(token, done, std::string::npos);
      token = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool prepended_;
};

class Replace final : public Decoder {
 public:
  explicit Replace(const JsonField& field) : replacement_(field) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) token = replacement_.apply(token);
  }

 private:
  Replacement replacement_;
};

// Runs of "<0xHH>" tokens become the text their bytes spell, or one U+FFFD
// per byte when those bytes are not UTF-8 (byte_fallback.rs).
class ByteFallback final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    const auto flush = [&] {
      if (run.empty()) return;
      if (unicode::find_invalid_utf8(run)) {
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      } else {
        out.push_back(run);
      }
      run.clear();
    };
    for (std::string& token : tokens) {
      if (const std::optional<uint8_t> byte = byte_token(token)) {
        run.push_back(static_cast<char>(*byte));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static std::optional<uint8_t> byte_token(const std::string& token) {
    if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return std::nullopt;
    const int high = hex_digit(token[3]), low = hex_digit(token[4]);
    if (high < 0 || low < 0) return std::nullopt;
    return static_cast<uint8_t>(high * 16 + low);
  }
};

class Fuse final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const std::string& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
};

// Up to `start` leading and `stop` trailing copies of one character removed
// from every token (strip.rs).
class Strip final : public Decoder {
 public:
  Strip(char32_t content, size_t start, size_t stop) : start_(start), stop_(stop) {
    unicode::append_utf8(content_, content);
  }
  void apply(std::vector<std::string>& tokens) const override {
    const size_t n = content_.size();
    for (std::string& token : tokens) {
      size_t begin = 0, end = token.size();
      for (size_t i = 0; i < start_ && token.compare(begin, n, content_) == 0; ++i) begin += n;
      for (size_t i = 0; i < stop_ && end - begin >= n && token.compare(end - n, n, content_) == 0; ++i)
        end -= n;
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

// The end-of-word suffix becomes a space, and nothing on the last token (bpe.rs).
class BpeSuffix final : public Decoder {
 public:
  explicit BpeSuffix(std::string suffix) : suffix_(std::move(suffix)) {}
  void apply(std::vector<std::string>& tokens) const override {
    if (suffix_.empty()) return;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string with = i + 1 == tokens.size() ? "" : " ";
      std::string& token = tokens[i];
      for (size_t at = token.find(suffix_); at != std::string::npos;
           at = token.find(suffix_, at + with.size()))
        token.replace(at, suffix_.size(), with);
    }
  }

 private:
  std::string suffix_;
};

size_t read_count(const JsonField& field) {
  const int64_t value = field.as_int();
  if (value < 0) field.fail("must not be negative, not " + field.quoted());
  return static_cast<size_t>(value);
}

}  // namespace

std::unique_ptr<Decoder> read_decoder(const JsonField& field) {
  if (field.is_null()) return nullptr;
  const JsonField type = field.at("type");
  const std::string name = type.as_string();
  if (name == "ByteLevel") return std::make_unique<ByteLevel>();
  if (name == "Metaspace") {
    // Prepending, under either spelling of the option, makes the first token drop it.
    bool prepended = field.bool_or("add_prefix_space", true);
    if (const std::optional<JsonField> scheme = field.find("prepend_scheme"))
      prepended = scheme->as_string() != "never";
    return std::make_unique<Metaspace>(field.at("replacement").as_char(), prepended);
  }
  if (name == "Replace") return std::make_unique<Replace>(field);
  if (name == "ByteFallback") return std::make_unique<ByteFallback>();
  if (name == "Fuse") return std::make_unique<Fuse>();
  if (name == "Strip")
    return std::make_unique<Strip>(field.at("content").as_char(), read_count(field.at("start")),
                                   read_count(field.at("stop")));
  if (name == "BPEDecoder") return std::make_unique<BpeSuffix>(field.string_or("suffix", "</w>"));
  if (name == "Sequence") return read_sequence<Decoder>(field, "decoders", read_decoder);
  type.unsupported(
      "\"ByteLevel\", \"Metaspace\", \"Replace\", \"ByteFallback\", \"Fuse\", \"Strip\", "
      "\"BPEDecoder\", \"Sequence\" or null");
}

}  // namespace lowbit::text::hf
