// bitsandbytes' state_dict layouts for one quantized weight, so a layer saved
// here loads in bitsandbytes/transformers and vice versa. 4-bit (Linear4bit):
//   <prefix>weight, <prefix>weight.absmax, <prefix>weight.quant_map,
//   <prefix>weight.nested_absmax, <prefix>weight.nested_quant_map (double quant),
//   <prefix>weight.quant_state.bitsandbytes__<nf4|fp4> (JSON bytes as uint8).
// Int8 (Linear8bitLt, LLM.int8()):
//   <prefix>weight (int8 [out, in]), <prefix>SCB (float32 [out], row absmax),
//   <prefix>weight_format (uint8 scalar; 0 = "row", the only layout
//   bitsandbytes writes since 0.45; 1-3 were its tiled GPU layouts).
#pragma once

#include <map>
#include <string>
#include <utility>

#include <torch/types.h>

#include "quant/quant_state.h"

namespace lowbit::quant {

using StateDict = std::map<std::string, torch::Tensor>;

// The entries for a 4-bit weight under `prefix` (e.g. "model.layers.0.mlp.up_proj.").
StateDict to_bnb_4bit(const torch::Tensor& packed, const QuantState& state,
                      const std::string& prefix = "");

// Reads the entries under `prefix` back, validating every tensor's dtype and
// size against the JSON quant state; `what` names the source (a file) in errors.
std::pair<torch::Tensor, QuantState> from_bnb_4bit(const StateDict& entries,
                                                   const std::string& prefix,
                                                   const std::string& what);

// The int8 entries for codes [out, in] and SCB [out] under `prefix`.
StateDict to_bnb_int8(const torch::Tensor& codes, const torch::Tensor& scb,
                      const std::string& prefix = "");

// Reads (codes, SCB) under `prefix`, validating dtypes and shapes; a missing
// weight_format means "row" (files from before bitsandbytes recorded it).
// Tiled layouts and unknown formats are refused; `what` names the source.
std::pair<torch::Tensor, torch::Tensor> from_bnb_int8(const StateDict& entries,
                                                      const std::string& prefix,
                                                      const std::string& what);

// Whether `entries` hold an int8 (SCB) or a 4-bit (quant_state) weight under `prefix`.
bool has_bnb_int8(const StateDict& entries, const std::string& prefix);

// The non-tensor part of the quant state as bitsandbytes serialises it:
// json.dumps of {quant_type, blocksize, dtype, shape[, nested_blocksize,
// nested_dtype, nested_offset]}.
std::string bnb_quant_state_json(const QuantState& state);

}  // namespace lowbit::quant
