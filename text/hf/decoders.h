// The `decoder` of a tokenizer.json: ByteLevel, Metaspace, Replace,
// ByteFallback, Fuse, Strip, BPEDecoder and Sequence. Each rewrites the list
// of token strings (the Rust library's decode_chain); decode joins the result.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/hf/json_field.h"

namespace lowbit::text::hf {

class Decoder {
 public:
  using Value = std::vector<std::string>;
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

// nullptr for a null decoder; unsupported types throw, naming the key path.
std::unique_ptr<Decoder> read_decoder(const JsonField& field);

}  // namespace lowbit::text::hf
