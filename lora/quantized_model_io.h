// A quantized model as one safetensors file in the layout transformers +
// bitsandbytes write: each Linear4bit at path P as "P.weight" (packed uint8),
// "P.weight.absmax", "P.weight.quant_map", "P.weight.nested_absmax",
// "P.weight.nested_quant_map", "P.weight.quant_state.bitsandbytes__nf4|fp4"
// (+ "P.bias"); each Linear8bit as "P.weight" (int8), "P.SCB",
// "P.weight_format" (+ "P.bias"); every other parameter and buffer under its
// module path. The metadata entry "lowbit.quantized_layers" records each
// quantized layer's format (and an int8 layer's threshold, which the tensors
// do not hold) as JSON {"P": {"format": "int8", "threshold": 6.0}, ...}.
// LoRA adapters are not part of it (save_adapter writes them); a
// LoraLinear's base is stored under the path of the layer it wraps, as if the
// adapter were not there.
#pragma once

#include <string>

#include <torch/nn/module.h>

#include "lora/linear4bit.h"
#include "lora/linear8bit.h"

namespace lowbit::lora {

// Writes atomically (a failed save leaves the previous file).
void save_quantized_model(torch::nn::Module& model, const std::string& path);

// Loads such a file into `model` (the same architecture, quantized or not),
// without re-quantizing: a 4-bit entry replaces the torch::nn::Linear at its
// path by a Linear4bit (with `options` for compute dtype and backend), an
// int8 entry by a Linear8bit (with `int8_options`, its threshold taken from
// the file's record when there is one), or updates the layer of that kind
// there. Files bitsandbytes wrote (no record) load too. Every other tensor
// is copied into the parameter or buffer of that name (shape checked, dtype
// converted). Entries the model lacks, and model
// tensors the file lacks, throw naming them; the check runs before anything
// changes.
void load_quantized_model(torch::nn::Module& model, const std::string& path,
                          const Linear4bitOptions& options = {},
                          const Linear8bitOptions& int8_options = {});

}  // namespace lowbit::lora
