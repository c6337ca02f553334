// Applies a recipe's quant and lora sections to a model in place: base
// linears to frozen NF4/FP4 (quant), LoRA adapters on the target linears with
// everything else frozen (lora), and returns what the optimizer trains.
#pragma once

#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "examples/config/recipe.h"
#include "kernels/backend.h"

namespace lowbit::train {

struct PreparedModel {
  std::vector<torch::Tensor> trainable;
  std::string description;  // parameter counts and, under quant/lora, what changed
};

PreparedModel prepare_model(const std::shared_ptr<torch::nn::Module>& model,
                            const config::QuantRecipe& quant, const config::LoraRecipe& lora,
                            kernels::Backend& backend);

}  // namespace lowbit::train
