#include "text/hf/normalizers.h"

#include <utility>

#include "text/hf/pattern.h"
#include "text/hf/sequence.h"
#include "text/unicode/char_class.h"
#include "text/unicode/normalize.h"
#include "text/unicode/utf8.h"

namespace lowbit::text::hf {
namespace {

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(unicode::NormalForm form) : form_(form) {}
  void apply(std::string& text) const override { text = unicode::normalize(text, form_); }

 private:
  unicode::NormalForm form_;
};

class Lowercase final : public Normalizer {
 public:
  void apply(std::string& text) const override { text = unicode::to_lowercase(text); }
};

// Prepends only to a non-empty text (normalizers/prepend.rs).
class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void apply(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class Replace final : public Normalizer {
 public:
  explicit Replace(const JsonField& field) : replacement_(field) {}
  void apply(std::string& text) const override { text = replacement_.apply(text); }

 private:
  Replacement replacement_;
};

// Removes whitespace (Rust's char::is_whitespace) from either end.
class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void apply(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      size_t pos = 0;
      while (pos < end && unicode::is_whitespace(unicode::next_code_point(text, pos))) begin = pos;
    }
    if (right_) {
      // Walk forward, remembering where the trailing whitespace run starts.
      size_t pos = begin, run = end;
      bool in_run = false;
      while (pos < end) {
        const size_t at = pos;
        const bool space = unicode::is_whitespace(unicode::next_code_point(text, pos));
        if (space && !in_run) run = at;
        in_run = space;
      }
      end = in_run ? run : end;
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

}  // namespace

std::unique_ptr<Normalizer> read_normalizer(const JsonField& field) {
  if (field.is_null()) return nullptr;
  const JsonField type = field.at("type");
  const std::string name = type.as_string();
  if (name == "NFC") return std::make_unique<UnicodeForm>(unicode::NormalForm::NFC);
  if (name == "NFD") return std::make_unique<UnicodeForm>(unicode::NormalForm::NFD);
  if (name == "NFKC") return std::make_unique<UnicodeForm>(unicode::NormalForm::NFKC);
  if (name == "NFKD") return std::make_unique<UnicodeForm>(unicode::NormalForm::NFKD);
  if (name == "Lowercase") return std::make_unique<Lowercase>();
  if (name == "Prepend") return std::make_unique<Prepend>(field.at("prepend").as_string());
  if (name == "Replace") return std::make_unique<Replace>(field);
  if (name == "Strip")
    return std::make_unique<Strip>(field.bool_or("strip_left", true), field.bool_or("strip_right", true));
  if (name == "Sequence") return read_sequence<Normalizer>(field, "normalizers", read_normalizer);
  type.unsupported(
      "\"NFC\", \"NFD\", \"NFKC\", \"NFKD\", \"Lowercase\", \"Prepend\", \"Replace\", \"Strip\", "
      "\"Sequence\" or null");
}

}  // namespace lowbit::text::hf
