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
// save leaves the previous file), with the configuration adapter_config()
// reads from the model's adapters; tensors keep their dtype.
void save_adapter(torch::nn::Module& model, const std::string& dir);
// The same, recording `config` (its target_modules patterns as written,
// task_type, base_model_name_or_path); the model's adapters must agree with
// it (r, lora_alpha, use_rslora).
void save_adapter(torch::nn::Module& model, const std::string& dir, const LoraConfig& config);

// The LoraConfig of the model's adapters: r, lora_alpha, lora_dropout,
// use_rslora and dtype from its LoraLinear layers (which must agree: PEFT's
// per-layer rank_pattern / alpha_pattern are not supported), and
// target_modules that select exactly the adapted layers: their last path
// components ("fc1", "qkv") when those select no other linear layer, else
// the full paths. task_type keeps its default; base_model_name_or_path is
// empty. Throws when the model holds no adapters.
LoraConfig adapter_config(torch::nn::Module& model);

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
