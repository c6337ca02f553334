// The `post_processor` of a tokenizer.json, for single sequences: the special
// token ids it puts before and after the encoded text when special tokens are
// asked for. TemplateProcessing (the single template), ByteLevel (offsets only,
// so nothing here), Sequence and null.
#pragma once

#include <cstdint>
#include <vector>

#include "text/hf/json_field.h"

namespace lowbit::text::hf {

struct SpecialTokenFrame {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
};

// Unsupported processors, templates without exactly one $A, and special tokens
// the template names but does not define throw, naming the key path.
SpecialTokenFrame read_post_processor(const JsonField& field);

}  // namespace lowbit::text::hf
