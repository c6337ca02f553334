// A quantized model as one safetensors file in the layout transformers +
// bitsandbytes write for a 4-bit model: each Linear4bit at path P as
// "P.weight" (packed uint8), "P.weight.absmax", "P.weight.quant_map",
// "P.weight.nested_absmax", "P.weight.nested_quant_map",
// "P.weight.quant_state.bitsandbytes__nf4|fp4" (+ "P.bias"), and every other
// parameter and buffer under its module path. LoRA adapters are not part of
// it (save_adapter writes them); a LoraLinear's base is stored under the path
// of the layer it wraps, as if the adapter were not there.
#pragma once

#include <string>

#include <torch/nn/module.h>

#include "lora/linear4bit.h"

namespace lowbit::lora {

// Writes atomically (a failed save leaves the previous file).
void save_quantized_model(torch::nn::Module& model, const std::string& path);

// Loads such a file into `model` (the same architecture, quantized or not):
// a 4-bit entry replaces the torch::nn::Linear at its path by a Linear4bit
// (with `options` for compute dtype and backend), or updates the Linear4bit
// there; every other tensor is copied into the parameter or buffer of that
// name (shape checked, dtype converted). Entries the model lacks, and model
// tensors the file lacks, throw naming them; the check runs before anything
// changes.
void load_quantized_model(torch::nn::Module& model, const std::string& path,
                          const Linear4bitOptions& options = {});

}  // namespace lowbit::lora
