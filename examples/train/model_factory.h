// Builds the network a recipe's model section names (models/): mlp, cnn or
// char_gpt, as a type-erased module whose forward maps a batch to logits.
#pragma once

#include <torch/nn/modules/container/any.h>

#include "examples/config/recipe.h"

namespace lowbit::train {

// Initialised from torch's default generator; seed it first.
torch::nn::AnyModule build_model(const config::ModelRecipe& model);

}  // namespace lowbit::train
