// LoRA adapters in PEFT's on-disk layout, so adapters trained here load with
// peft.PeftModel.from_pretrained and vice versa:
//   <dir>/adapter_model.safetensors  "base_model.model.<module path>.lora_A.weight" [r, in]
//                                    "base_model.model.<module path>.lora_B.weight" [out, r]
//   <dir>/adapter_config.json        peft_type "LORA", r, lora_alpha, target_modules, ...
#pragma once

#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "lora/apply_lora.h"

namespace lowbit::lora {

// Creates `dir` if needed and writes both files (each atomically: a failed
// save leaves the previous file). The model's adapters must agree with
// `config` (r, lora_alpha, use_rslora); tensors keep their dtype.
void save_adapter(torch::nn::Module& model, const std::string& dir, const LoraConfig& config);

// Reads <dir>/adapter_config.json. PEFT options this library does not
// implement (bias other than "none", fan_in_fan_out, rank/alpha patterns,
// DoRA, ...) are refused with a message naming them.
LoraConfig load_adapter_config(const std::string& dir);

// PEFT's from_pretrained: wraps the layers named in the adapter file (which
// must be what the config's target_modules select), loads their weights in
// the file's dtype, freezes everything else and returns the adapter
// parameters. The model must not hold adapters yet.
std::vector<torch::Tensor> load_adapter(torch::nn::Module& model, const std::string& dir);

// Loads adapter weights into a model already prepared by apply_lora with the
// same rank and layers. Shapes, ranks and the set of layers must match
// exactly; values are cast to the adapters' dtype.
void load_adapter_weights(torch::nn::Module& model, const std::string& dir);

}  // namespace lowbit::lora
