#include "text/hf/pre_tokenizers.h"

#include <utility>

#include "text/hf/byte_level.h"
#include "text/hf/pattern.h"
#include "text/hf/sequence.h"
#include "text/hf/split.h"
#include "text/unicode/char_class.h"
#include "text/unicode/regex.h"
#include "text/unicode/utf8.h"

namespace lowbit::text::hf {
namespace {

// Replaces every piece by its sub-pieces at the spans `spans_of` finds.
template <typename SpansOf>
void split_each(std::vector<Piece>& pieces, SpansOf spans_of) {
  std::vector<Piece> out;
  out.reserve(pieces.size());
  for (Piece& piece : pieces) {
    const std::vector<Span> spans = spans_of(piece.text);
    if (spans.size() == 1 && spans[0].begin == 0 && spans[0].end == piece.text.size()) {
      out.push_back(std::move(piece));
      continue;
    }
    for (const Span& s : spans)
      out.push_back({piece.text.substr(s.begin, s.end - s.begin), piece.at_text_start && s.begin == 0});
  }
  pieces = std::move(out);
}

// GPT-2's pattern, which ByteLevel applies when use_regex is set
// (pre_tokenizers/byte_level.rs).
const unicode::Regex& gpt2_pattern() {
  static const unicode::Regex pattern(
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
  return pattern;
}

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}

  void apply(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_) {
      for (Piece& piece : pieces)
        if (piece.text.empty() || piece.text[0] != ' ') piece.text.insert(0, 1, ' ');
    }
    if (use_regex_) {
      split_each(pieces, [](const std::string& text) {
        return split_spans(text.size(), gpt2_pattern().find_all(text), SplitBehavior::Isolated);
      });
    }
    for (Piece& piece : pieces) piece.text = to_byte_level(piece.text);
  }

 private:
  bool add_prefix_space_, use_regex_;
};

class Split final : public PreTokenizer {
 public:
  explicit Split(const JsonField& field)
      : pattern_(field.at("pattern")),
        behavior_(read_split_behavior(field.at("behavior"))),
        invert_(field.bool_or("invert", false)) {}

  void apply(std::vector<Piece>& pieces) const override {
    split_each(pieces, [this](const std::string& text) {
      return split_spans(text.size(), pattern_.find_all(text), behavior_, invert_);
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// Digits apart from the rest: each on its own, or in runs (digits.rs). Rust's
// char::is_numeric counts every N category, not just ASCII digits.
class Digits final : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}
  void apply(std::vector<Piece>& pieces) const override {
    const SplitBehavior behavior = individual_ ? SplitBehavior::Isolated : SplitBehavior::Contiguous;
    split_each(pieces, [behavior](const std::string& text) {
      return split_spans(text.size(), char_matches(text, unicode::is_numeric), behavior);
    });
  }

 private:
  bool individual_;
};

enum class PrependScheme { Always, First, Never };

// Spaces become the replacement character (SentencePiece's '▁'), which is
// prepended per the scheme; with split, each replacement starts a new piece
// (pre_tokenizers/metaspace.rs).
class Metaspace final : public PreTokenizer {
 public:
  Metaspace(char32_t replacement, PrependScheme scheme, bool split)
      : replacement_(replacement), scheme_(scheme), split_(split) {
    unicode::append_utf8(replacement_utf8_, replacement);
  }

  void apply(std::vector<Piece>& pieces) const override {
    for (Piece& piece : pieces) {
      std::string replaced;
      replaced.reserve(piece.text.size() + replacement_utf8_.size());
      for (const char c : piece.text) {
        if (c == ' ') {
          replaced += replacement_utf8_;
        } else {
          replaced.push_back(c);
        }
      }
      const bool prepend = scheme_ == PrependScheme::Always ||
                           (scheme_ == PrependScheme::First && piece.at_text_start);
      if (prepend && replaced.compare(0, replacement_utf8_.size(), replacement_utf8_) != 0)
        replaced.insert(0, replacement_utf8_);
      piece.text = std::move(replaced);
    }
    if (split_) {
      split_each(pieces, [this](const std::string& text) {
        const auto is_replacement = [this](char32_t c) { return c == replacement_; };
        return split_spans(text.size(), char_matches(text, is_replacement),
                           SplitBehavior::MergedWithNext);
      });
    }
  }

 private:
  char32_t replacement_;
  std::string replacement_utf8_;
  PrependScheme scheme_;
  bool split_;
};

PrependScheme read_prepend_scheme(const JsonField& field) {
  // Files written before prepend_scheme existed say add_prefix_space instead.
  if (const std::optional<JsonField> scheme = field.find("prepend_scheme")) {
    const std::string name = scheme->as_string();
    if (name == "always") return PrependScheme::Always;
    if (name == "first") return PrependScheme::First;
    if (name == "never") return PrependScheme::Never;
    scheme->unsupported("\"always\", \"first\", \"never\"");
  }
  return field.bool_or("add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
}

// Words and runs of other non-space characters, with Rust regex's \w
// (whitespace.rs: \w+|[^\w\s]+), spelled out so that no translation applies.
class Whitespace final : public PreTokenizer {
 public:
  void apply(std::vector<Piece>& pieces) const override {
    static const unicode::Regex words(
        R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]+|)"
        R"([^\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}\p{White_Space}]+)");
    split_each(pieces, [](const std::string& text) {
      return split_spans(text.size(), words.find_all(text), SplitBehavior::Removed, true);
    });
  }
};

class WhitespaceSplit final : public PreTokenizer {
 public:
  void apply(std::vector<Piece>& pieces) const override {
    split_each(pieces, [](const std::string& text) {
      return split_spans(text.size(), char_matches(text, unicode::is_whitespace),
                         SplitBehavior::Removed);
    });
  }
};

}  // namespace

std::unique_ptr<PreTokenizer> read_pre_tokenizer(const JsonField& field) {
  if (field.is_null()) return nullptr;
  const JsonField type = field.at("type");
  const std::string name = type.as_string();
  if (name == "ByteLevel")
    return std::make_unique<ByteLevel>(field.bool_or("add_prefix_space", true),
                                       field.bool_or("use_regex", true));
  if (name == "Split") return std::make_unique<Split>(field);
  if (name == "Digits") return std::make_unique<Digits>(field.bool_or("individual_digits", false));
  if (name == "Metaspace")
    return std::make_unique<Metaspace>(field.at("replacement").as_char(), read_prepend_scheme(field),
                                       field.bool_or("split", true));
  if (name == "Whitespace") return std::make_unique<Whitespace>();
  if (name == "WhitespaceSplit") return std::make_unique<WhitespaceSplit>();
  if (name == "Sequence") return read_sequence<PreTokenizer>(field, "pretokenizers", read_pre_tokenizer);
  type.unsupported(
      "\"ByteLevel\", \"Split\", \"Digits\", \"Metaspace\", \"Whitespace\", \"WhitespaceSplit\", "
      "\"Sequence\" or null");
}

}  // namespace lowbit::text::hf
