// The `normalizer` of a tokenizer.json: NFC, NFD, NFKC, NFKD, Lowercase,
// Prepend, Replace, Strip and Sequence, with the Rust library's semantics.
#pragma once

#include <memory>
#include <string>

#include "text/hf/json_field.h"

namespace lowbit::text::hf {

class Normalizer {
 public:
  using Value = std::string;
  virtual ~Normalizer() = default;
  virtual void apply(std::string& text) const = 0;
};

// nullptr for a null normalizer; unsupported types throw, naming the key path.
std::unique_ptr<Normalizer> read_normalizer(const JsonField& field);

}  // namespace lowbit::text::hf
