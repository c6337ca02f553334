// Applies a recipe's quant and lora sections to a model in place (QLoRA):
// quant converts the base linears into frozen NF4/FP4 Linear4bit or int8
// Linear8bit layers (per-layer formats by pattern), lora
// wraps the target linears in LoraLinear adapters and freezes everything else.
// Returns what the optimizer trains. Works on the model where it is: a CUDA
// model is quantized and adapted on its device (pass a null backend, so the
// layers follow their tensors' device).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "examples/config/recipe.h"
#include "kernels/backend.h"
#include "lora/apply_lora.h"
#include "lora/linear4bit.h"
#include "lora/linear8bit.h"

namespace lowbit::train {

struct PreparedModel {
  std::vector<torch::Tensor> trainable;
  std::vector<std::string> trainable_names;  // module paths, parallel to `trainable`
  std::string description;                   // parameter counts and what quant/lora changed
  std::optional<lora::LoraConfig> adapters;  // set when LoRA adapters were added
  std::string quantization_table;            // quantize_model's report table, when it ran
};

// The 4-bit layer options a quant section asks for.
lora::Linear4bitOptions linear4bit_options(const config::QuantRecipe& quant,
                                           const std::shared_ptr<kernels::Backend>& backend);
// The Linear8bit layers' options of a quant section (quant.type int8).
lora::Linear8bitOptions int8_options(const config::QuantRecipe& quant,
                                     const std::shared_ptr<kernels::Backend>& backend);

// `quant.enabled` with a model whose loader already quantized it (a Hugging
// Face checkpoint read straight into 4-bit layers) is described, not redone:
// pass `quantized_on_load`, the loader's description.
//
// `adapter_dir` (model.adapter): a PEFT adapter folder loaded onto the model,
// whose adapters are then what trains. Without a lora section its
// adapter_config.json decides everything (r, lora_alpha, use_rslora,
// target_modules, lora_dropout; the file's dtype). With one, the section must
// repeat r, alpha, rslora and target (errors name the file, its key and the
// recipe's key); lora.dropout and lora.dtype, how the adapters train, are the
// recipe's.
PreparedModel prepare_model(torch::nn::Module& model, const config::QuantRecipe& quant,
                            const config::LoraRecipe& lora,
                            const std::shared_ptr<kernels::Backend>& backend,
                            const std::string& quantized_on_load = "",
                            const std::string& adapter_dir = "");

}  // namespace lowbit::train
