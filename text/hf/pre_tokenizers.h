// The `pre_tokenizer` of a tokenizer.json: ByteLevel, Split, Digits, Metaspace,
// Whitespace, WhitespaceSplit and Sequence, cutting normalized text into the
// pieces that the model tokenizes one at a time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/hf/json_field.h"

namespace lowbit::text::hf {

struct Piece {
  std::string text;
  // Whether the piece begins where the encoded text begins (Metaspace's
  // prepend_scheme "first" prepends to that piece only).
  bool at_text_start;
};

class PreTokenizer {
 public:
  using Value = std::vector<Piece>;
  virtual ~PreTokenizer() = default;
  virtual void apply(std::vector<Piece>& pieces) const = 0;
};

// nullptr for a null pre-tokenizer; unsupported types throw, naming the key path.
std::unique_ptr<PreTokenizer> read_pre_tokenizer(const JsonField& field);

}  // namespace lowbit::text::hf
