// Training checkpoints (examples/train/checkpoint.cpp), read as resume reads
// them: opened, restored into a [32, 16] linear layer and its AdamW8bit
// (the weight's states 8-bit in two blocks of 256, the bias's 32-bit), then
// stepped once, so states that load but do not fit their parameter reach the
// kernels. Each input is tried twice: as the file's bytes (the outer archive
// and its checksum), and sealed with a valid checksum as the payload, which
// is the only way fuzzed bytes reach libtorch's pickle reader and the
// optimizer's load() behind the checksum.
//
// Seeds are checkpoints the trainer's own code writes:
//   LOWBIT_FUZZ_WRITE_SEEDS=tests/fuzz/corpus/checkpoint_fuzz build-fuzz/tests/fuzz/checkpoint_fuzz
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/linear.h>
#include <torch/serialize/input-archive.h>

#include "examples/train/checkpoint.h"
#include "optim/adam8bit.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using lowbit::train::Checkpoint;

struct Run {
  torch::nn::Linear model{torch::nn::Linear(16, 32)};
  std::unique_ptr<lowbit::optim::AdamW8bit> optimizer;

  Run() {
    optimizer = std::make_unique<lowbit::optim::AdamW8bit>(
        model->parameters(), lowbit::optim::AdamW8bitOptions(1e-2).min_8bit_size(256).block_size(256));
  }

  void step(int seed) {
    torch::manual_seed(seed);
    optimizer->zero_grad();
    model->forward(torch::randn({4, 16})).square().mean().backward();
    optimizer->step();
  }
};

// Resumes from `path` as the trainer does; a refusal must name the file.
// What restore accepted must then step without a sanitizer report (a step
// may still refuse, e.g. a hyper-parameter out of range, with any message).
void resume(const std::string& path) {
  Run run;
  bool restored = false;
  lowbit::fuzz::expect_clean_refusal(path, [&] {
    Checkpoint checkpoint(path);
    checkpoint.restore(*run.model, *run.optimizer);
    restored = true;
  });
  if (!restored) return;
  try {
    run.step(1);
  } catch (const std::exception&) {
  }
}

// Writes the seeds: a checkpoint after two steps (file and payload), and the
// same checkpoint before any step (states not yet created).
void write_seeds(const std::string& dir) {
  for (const int steps : {0, 2}) {
    Run run;
    for (int i = 0; i < steps; ++i) run.step(i);
    lowbit::train::TrainerState state;
    state.step = steps;
    state.micro_batch = 4 * steps;
    state.rng_state = at::detail::getDefaultCPUGenerator().get_state();
    state.recipe_yaml = "model: {kind: linear}\n";
    const std::string file = dir + "/step" + std::to_string(steps) + ".ckpt";
    lowbit::train::save_checkpoint(file, *run.model, *run.optimizer, state);
    torch::serialize::InputArchive outer;
    outer.load_from(file);
    torch::Tensor payload;
    outer.read("payload", payload);
    std::ofstream(dir + "/step" + std::to_string(steps) + ".payload", std::ios::binary)
        .write(reinterpret_cast<const char*>(payload.data_ptr<uint8_t>()), payload.numel());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("LOWBIT_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = lowbit::fuzz::as_text(data, size);
  resume(lowbit::fuzz::write_input("fuzz.ckpt", bytes));
  resume(lowbit::fuzz::write_input(
      "sealed.ckpt", lowbit::train::seal_checkpoint_payload(std::string(bytes))));
  return 0;
}
