#include "text/hf/post_processor.h"

#include <limits>
#include <string>

namespace lowbit::text::hf {
namespace {

std::vector<int32_t> special_token_ids(const JsonField& special_tokens, const JsonField& piece) {
  const std::string name = piece.at("id").as_string();
  const std::optional<JsonField> entry = special_tokens.find(name);
  if (!entry) piece.at("id").fail("names a special token that special_tokens does not define");
  const JsonField ids = entry->at("ids");
  std::vector<int32_t> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = ids.at(i).as_int();
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) ids.at(i).fail("is not a token id");
    out.push_back(static_cast<int32_t>(id));
  }
  return out;
}

// The `single` template: special tokens around exactly one "$A" sequence
// (templates.rs writes it as {"Sequence": {"id": "A", ...}}).
SpecialTokenFrame read_template(const JsonField& field) {
  const JsonField single = field.at("single");
  const JsonField special_tokens = field.at("special_tokens");
  SpecialTokenFrame frame;
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const JsonField piece = single.at(i);
    if (const std::optional<JsonField> special = piece.find("SpecialToken")) {
      std::vector<int32_t> ids = special_token_ids(special_tokens, *special);
      auto& side = seen_sequence ? frame.suffix : frame.prefix;
      side.insert(side.end(), ids.begin(), ids.end());
    } else if (const std::optional<JsonField> sequence = piece.find("Sequence")) {
      const JsonField id = sequence->at("id");
      if (id.as_string() != "A") id.unsupported("\"A\" in a single-sequence template");
      if (seen_sequence) single.fail("holds $A more than once, which is not supported");
      seen_sequence = true;
    } else {
      piece.unsupported("{\"SpecialToken\": ...} or {\"Sequence\": ...}");
    }
  }
  if (!seen_sequence) single.fail("has no $A sequence");
  return frame;
}

}  // namespace

SpecialTokenFrame read_post_processor(const JsonField& field) {
  if (field.is_null()) return {};
  const JsonField type = field.at("type");
  const std::string name = type.as_string();
  if (name == "ByteLevel") return {};
  if (name == "TemplateProcessing") return read_template(field);
  if (name == "Sequence") {
    // Each processor wraps what the ones before it produced.
    const JsonField list = field.at("processors");
    SpecialTokenFrame frame;
    for (size_t i = 0; i < list.size(); ++i) {
      SpecialTokenFrame outer = read_post_processor(list.at(i));
      outer.prefix.insert(outer.prefix.end(), frame.prefix.begin(), frame.prefix.end());
      frame.suffix.insert(frame.suffix.end(), outer.suffix.begin(), outer.suffix.end());
      frame.prefix = std::move(outer.prefix);
    }
    return frame;
  }
  type.unsupported("\"TemplateProcessing\", \"ByteLevel\", \"Sequence\" or null");
}

}  // namespace lowbit::text::hf
