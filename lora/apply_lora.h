// apply_lora: wraps a model's Linear4bit / Linear8bit / torch::nn::Linear layers selected by
// module path in LoraLinear adapters, freezes every other parameter, and
// returns the adapters' parameters (ready for an optimizer). LoraConfig holds
// PEFT's LoraConfig fields, so the same values describe a saved adapter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "lora/lora_linear.h"

namespace lowbit::lora {

struct LoraConfig {
  int64_t r = 8;
  double lora_alpha = 8.0;
  double lora_dropout = 0.0;
  bool use_rslora = false;
  // Module path patterns (see PathPatterns): "qkv", "fc1", "blocks\.0\..*".
  std::vector<std::string> target_modules;
  // PEFT's bias option. Only "none" (biases stay frozen and are not saved
  // with the adapter) is supported.
  std::string bias = "none";
  // Recorded in adapter_config.json for PEFT.
  std::string task_type = "CAUSAL_LM";
  std::string base_model_name_or_path;
  // Storage and compute dtypes of the adapters (see LoraOptions).
  torch::ScalarType dtype = torch::kFloat16;
  torch::ScalarType compute_dtype = torch::kFloat32;

  LoraOptions layer_options() const;
  // Throws naming the field when a value is out of range.
  void validate() const;
};

// Wraps every Linear4bit, Linear8bit or Linear whose path matches
// config.target_modules (replace_submodule: a lowbit::nn::Linear takes the
// adapter as its implementation; any other layer is swapped in its parent's
// module registry, so the model must call it through the registry), sets
// requires_grad false on every other parameter and returns lora_A, lora_B of
// each wrapped layer in model order. Throws, changing nothing, when the model
// already holds LoRA adapters, no layer matches, or a selected layer is also
// held outside the module registry (a typed member; see check_replaceable).
std::vector<torch::Tensor> apply_lora(torch::nn::Module& model, const LoraConfig& config);

// The LoraLinear layers of a model by module path, in model order (a
// lowbit::nn::Linear holding one is listed under its own path).
std::vector<std::pair<std::string, LoraLinear>> lora_layers(torch::nn::Module& model);

}  // namespace lowbit::lora
