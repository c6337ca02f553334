// A training task: the recipe's model and data, the loss of one micro-batch
// and the evaluation. Image classification (Fashion-MNIST: test-set loss and
// accuracy), character-level language modelling (KJV, fortunes: validation
// loss) and subword language models (Llama-family, causal_lm_task.h:
// validation loss and perplexity). The trainer loop only sees this interface.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "examples/config/recipe.h"

namespace lowbit::train {

// The share of every training micro-batch this process computes in a data-parallel run of
// `ranks` processes: rows [n rank / ranks, n (rank + 1) / ranks) of a batch of n rows, so the
// ranks together take the batch one process takes, each row once.
struct DataShard {
  int rank = 0, ranks = 1;
  int64_t begin(int64_t n) const { return n * rank / ranks; }
  int64_t end(int64_t n) const { return n * (rank + 1) / ranks; }
};

struct Evaluation {
  double loss = 0.0;               // mean cross-entropy per example (image) or token (text)
  std::optional<double> accuracy;  // image tasks: share of test images classified right
  std::optional<double> perplexity;  // subword language models: exp(loss)
};

class Task {
 public:
  virtual ~Task() = default;
  // The model, on the task's device; QLoRA preparation swaps layers inside it
  // in place.
  virtual std::shared_ptr<torch::nn::Module> module() const = 0;
  virtual int64_t batches_per_epoch() const = 0;
  // Training loss of micro-batch `index` (a pure function of the seed and the
  // index, so the data position of a run is its micro-batch counter). With a
  // DataShard of several ranks: the loss of this rank's rows, weighted so that
  // the mean over the ranks is the whole batch's loss (and so the mean of the
  // ranks' gradients the whole batch's gradient); undefined when this rank
  // has no rows (a last batch smaller than the ranks).
  virtual torch::Tensor loss(int64_t index) = 0;
  // Runs in eval mode without gradients, then restores training mode.
  virtual Evaluation evaluate() = 0;
  virtual std::string describe() const = 0;
  // Language models: the model's continuation of each prompt with the
  // recipe's generate settings (none elsewhere).
  virtual std::vector<std::string> continue_prompts(const std::vector<std::string>& /*prompts*/) {
    return {};
  }
  // What only the task can write at the end of a run (a model trained from
  // scratch in Hugging Face layout): the paths written.
  virtual std::vector<std::string> export_model() { return {}; }
  // Language models: writes the model as it is now into `dir` in Hugging
  // Face layout (LoRA adapters folded into the dequantized base) with the
  // tokenizer files. Other tasks throw.
  virtual void save_hf(const std::string& dir);
  // When the model was quantized while it was loaded (recipe quant section
  // applied already): a description of that; empty otherwise.
  virtual std::string quantized_on_load() const { return ""; }
};

// Reads the data (corrupt or truncated files throw here, before training),
// builds the model from torch's generator seeded with train.seed (on the CPU,
// so a seed gives the same initial weights on every device) and moves it and
// the evaluation data to `device`; training batches are drawn on the CPU and
// moved there one at a time.
std::unique_ptr<Task> make_task(const config::Recipe& recipe, torch::Device device,
                                DataShard shard = {});

}  // namespace lowbit::train
