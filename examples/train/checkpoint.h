// Checkpoints of a training run: model parameters and buffers, the optimizer's
// state through its own save() (8-bit codes and absmax exactly), the step, the
// data position, torch's generator states and the recipe. Files are
// "<dir>/step-<8 digits>.ckpt", written through quant::write_file_atomically (temp file,
// fsync, rename), so a file under that name is always complete, and carry a
// checksum of their contents that every load verifies, so bytes changed on
// disk later are refused (naming the file) instead of resuming into NaN. Files hold
// CPU tensors whatever device the model is on, and restore copies them to
// wherever the model lives: a run saved on a GPU resumes on the CPU and back.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

namespace lowbit::train {

struct TrainerState {
  int64_t step = 0;         // optimizer steps taken
  int64_t micro_batch = 0;  // micro-batches consumed: the data position
  torch::Tensor rng_state;  // torch's default CPU generator (dropout, LoRA init)
  std::string recipe_yaml;  // config::to_yaml of the run's recipe
  // The default generator of the run's CUDA device (dropout on the GPU);
  // undefined for a CPU run, and then not written.
  torch::Tensor cuda_rng_state;
};

std::string checkpoint_path(const std::string& dir, int64_t step);

void save_checkpoint(const std::string& path, torch::nn::Module& model,
                     torch::optim::Optimizer& optimizer, const TrainerState& state);
// The same file, with the optimizer's state already written to `optimizer_state`: a sharded
// optimizer (ZeRO-1) gathers its one logical state dict on rank 0 first, in the format the
// single-process optimizer writes, so the file resumes on any number of processes.
void save_checkpoint(const std::string& path, torch::nn::Module& model,
                     torch::serialize::OutputArchive& optimizer_state,
                     const TrainerState& state);

// A parsed checkpoint, checked against a model before anything is changed.
class Checkpoint {
 public:
  // Throws c10::Error naming the file when it cannot be parsed or is not a
  // lowbit-train checkpoint.
  explicit Checkpoint(const std::string& path);

  const std::string& path() const { return path_; }
  const TrainerState& state() const { return state_; }

  // Copies the weights into `model`, on whatever device it is (every tensor
  // must exist with the same shape and dtype, and no extra ones), and loads
  // the optimizer's state (lowbit's optimizers move it to their parameters'
  // device; torch::optim's stays on the CPU). All or nothing: when it throws
  // (naming the file), the model and the optimizer are as they were.
  void restore(torch::nn::Module& model, torch::optim::Optimizer& optimizer);
  // restore() in two parts, for an optimizer that is built after the weights are in place
  // (ZeRO-1 shards the states of the restored parameters): the weights alone, then the
  // optimizer's state dict handed to `load`. Errors from `load` name the file.
  void restore_model(torch::nn::Module& model);
  void load_optimizer(const std::function<void(torch::serialize::InputArchive&)>& load);

 private:
  std::string path_;
  // Held by pointer: the archive's deleted copy constructor takes a non-const
  // reference, which makes std::optional<Checkpoint> fail to compile with
  // clang 14 and libstdc++ 12.
  std::unique_ptr<torch::serialize::InputArchive> archive_;
  TrainerState state_;
};

// The bytes of a checkpoint file (format 2) holding `payload` (a serialized
// archive) with its checksum: what save_checkpoint writes. The checkpoint fuzz
// target seals fuzzed payloads with it to reach the parser behind the checksum.
std::string seal_checkpoint_payload(std::string payload);

// Step numbers of the checkpoints in `dir`, ascending.
std::vector<int64_t> list_checkpoints(const std::string& dir);

// Deletes all but the newest `keep` checkpoints.
void prune_checkpoints(const std::string& dir, int64_t keep);

// Removes temp files that a killed save left behind; returns how many.
int remove_stale_temp_files(const std::string& dir);

// Model weights alone ("model.pt", CPU tensors); load_model also reads a
// checkpoint's. Loading is strict: the same tensor names, shapes and dtypes.
void save_model(const std::string& path, torch::nn::Module& model);
void load_model(const std::string& path, torch::nn::Module& model);

}  // namespace lowbit::train
