// The model a recipe trains, built the way every use of a run builds it:
// the task (data and network) on the recipe's device, model.init's weights,
// then the quant, lora and model.adapter preparation. The trainer starts
// from it; lowbit-train --generate and --merge load a run's weights into it.
#pragma once

#include <memory>
#include <string>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "examples/config/recipe.h"
#include "examples/train/prepare_model.h"
#include "examples/train/task.h"
#include "kernels/backend.h"

namespace lowbit::train {

struct RunModel {
  torch::Device device = torch::kCPU;
  // CPU runs: the recipe's backend. CUDA runs: none, so the optimizer and the
  // 4-bit layers take the CUDA backend of their tensors' device.
  std::shared_ptr<kernels::Backend> backend;
  std::string backend_name;  // what runs the kernels, for headers
  std::string backend_reason;  // why that backend, for headers
  std::unique_ptr<Task> task;
  std::shared_ptr<torch::nn::Module> model;  // task->module()
  PreparedModel prepared;
};

// Sets train.threads, then builds as described above; `shard` is the share of
// each training batch this process computes (make_task). `cuda_device`: the
// GPU of a device: cuda run (a rank's own, with several processes).
RunModel make_run_model(const config::Recipe& recipe, DataShard shard = {}, int cuda_device = 0);

// Where a finished run leaves its model: <checkpoint.dir>/model.pt.
std::string final_model_path(const config::Recipe& recipe);

// Loads the newest weights the run wrote into `built`: model.pt when the
// run finished, else its newest checkpoint. Returns the file read, or ""
// when the run has written neither (the model keeps the recipe's starting
// weights).
std::string load_newest_weights(const config::Recipe& recipe, RunModel& built);

}  // namespace lowbit::train
