#include "examples/train/run_model.h"

#include <ATen/Context.h>
#include <torch/utils.h>

#include <filesystem>

#include "examples/train/checkpoint.h"

namespace lowbit::train {
namespace fs = std::filesystem;

RunModel make_run_model(const config::Recipe& r, DataShard shard, int cuda_device) {
  RunModel m;
  if (r.train.threads > 0) torch::set_num_threads(int(r.train.threads));
  m.device = r.device == "cuda"
                 ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(cuda_device))
                 : torch::Device(torch::kCPU);
  if (m.device.is_cuda()) {
    m.backend_name = kernels::backend_for(kernels::Location::cuda(m.device.index()))->name();
    m.backend_reason = "the model trains on " + m.device.str();
  } else {
    kernels::BackendOptions backend_options;
    backend_options.kind = r.backend;
    kernels::BackendChoice choice = kernels::choose_backend(backend_options);
    m.backend = std::move(choice.backend);
    m.backend_name = m.backend->name();
    m.backend_reason = std::move(choice.reason);
  }
  // The model comes on the device: quant and LoRA prepare it there, and the
  // optimizer is built after, over the parameters where they will train.
  m.task = make_task(r, m.device, shard);
  m.model = m.task->module();
  if (!r.model.init.empty()) load_model(r.model.init, *m.model);
  m.prepared = prepare_model(*m.model, r.quant, r.lora, m.backend, m.task->quantized_on_load(),
                             r.model.adapter);
  // PEFT loads an adapter onto the checkpoint named here.
  if (m.prepared.adapters && r.model.name == "hf_causal_lm")
    m.prepared.adapters->base_model_name_or_path =
        fs::absolute(r.model.path).lexically_normal().string();
  return m;
}

std::string final_model_path(const config::Recipe& recipe) {
  return (fs::path(recipe.checkpoint.dir) / "model.pt").string();
}

std::string load_newest_weights(const config::Recipe& recipe, RunModel& built) {
  // A finished run writes model.pt after its last checkpoint; a run resumed
  // later and stopped early leaves a checkpoint newer than model.pt.
  std::string path;
  const std::vector<int64_t> steps = list_checkpoints(recipe.checkpoint.dir);
  if (!steps.empty()) path = checkpoint_path(recipe.checkpoint.dir, steps.back());
  const std::string final_model = final_model_path(recipe);
  if (fs::is_regular_file(final_model) &&
      (path.empty() || fs::last_write_time(final_model) >= fs::last_write_time(path))) {
    path = final_model;
  }
  if (!path.empty()) load_model(path, *built.model);
  return path;
}

}  // namespace lowbit::train
