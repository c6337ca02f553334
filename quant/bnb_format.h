// bitsandbytes' 4-bit state_dict layout for one quantized weight, so a
// Linear4bit saved here loads in bitsandbytes/transformers and vice versa:
//   <prefix>weight, <prefix>weight.absmax, <prefix>weight.quant_map,
//   <prefix>weight.nested_absmax, <prefix>weight.nested_quant_map (double quant),
//   <prefix>weight.quant_state.bitsandbytes__<nf4|fp4> (JSON bytes as uint8).
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

// The non-tensor part of the quant state as bitsandbytes serialises it:
// json.dumps of {quant_type, blocksize, dtype, shape[, nested_blocksize,
// nested_dtype, nested_offset]}.
std::string bnb_quant_state_json(const QuantState& state);

}  // namespace lowbit::quant
