// The parameters a model.pt or checkpoint holds, loaded into a model freshly
// built from the recipe (with its quant/LoRA layers); reads no data set.
#pragma once

#include <map>
#include <string>

#include <torch/torch.h>

#include "examples/config/recipe.h"
#include "examples/train/checkpoint.h"
#include "examples/train/model_factory.h"
#include "examples/train/prepare_model.h"

namespace lowbit::testing {

inline std::map<std::string, torch::Tensor> saved_weights(const config::Recipe& recipe,
                                                          const std::string& path) {
  torch::nn::AnyModule model = train::build_model(recipe.model);
  train::prepare_model(*model.ptr(), recipe.quant, recipe.lora, nullptr);
  train::load_model(path, *model.ptr());
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : model.ptr()->named_parameters()) out[p.key()] = p.value();
  return out;
}

}  // namespace lowbit::testing
