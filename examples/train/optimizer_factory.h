// Builds the optimizer a recipe's optimizer section names over the trainable
// parameters: the 8-bit optimizers of optim/ (or their 32-bit modes) and, for
// comparison, torch::optim's Adam, AdamW, RMSprop and SGD. Hyper-parameters
// the recipe leaves out keep the optimizer's own defaults.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "examples/config/recipe.h"
#include "kernels/backend.h"

namespace lowbit::train {

struct BuiltOptimizer {
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::string description;  // "lowbit::optim::AdamW8bit lr=0.001 ..." for the run's log
  // Bytes of optimizer state held now (states appear after the first step).
  std::function<int64_t()> state_bytes;
  // Steps skipped for a non-finite gradient so far (0 for torch::optim).
  std::function<int64_t()> skipped_steps;
  // Moves the per-parameter states to `device`: checkpoints hold CPU tensors,
  // and torch::optim keeps its states wherever they were made or loaded.
  // lowbit's optimizers do this themselves in save/load (a no-op here).
  std::function<void(torch::Device)> move_states;
};

// `names` are the parameters' module paths, parallel to `params`
// (optimizer.fp32_params matches them); `backend` runs the 8-bit kernels
// (nullptr: the parameters' device decides, e.g. the CUDA backend for CUDA
// parameters).
BuiltOptimizer make_optimizer(const config::OptimizerRecipe& recipe,
                              const std::vector<torch::Tensor>& params,
                              const std::vector<std::string>& names,
                              const std::shared_ptr<kernels::Backend>& backend);

}  // namespace lowbit::train
