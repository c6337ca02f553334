// The trainer end to end on real data subsets: a 20-step run of every recipe in
// configs/, resume from a checkpoint bit-identical to the run straight through
// (dropout, gradient accumulation and a decaying schedule included), a resume
// under a changed recipe refused, and (where there is a GPU) runs that move
// between the GPU and the CPU through their checkpoints.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <torch/cuda.h>
#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/config/recipe.h"
#include "examples/train/checkpoint.h"
#include "examples/train/metrics_log.h"
#include "examples/train/trainer.h"
#include "kernels/backend.h"
#include "tests/examples/saved_weights.h"
#include "tests/examples/run_recipe.h"
#include "tests/support/scratch_dir.h"
#include "tests/kernels/backends.h"

namespace lowbit::train {
namespace {

namespace fs = std::filesystem;
using lowbit::testing::run;
using lowbit::testing::ScratchDir;


std::vector<double> losses(const std::string& metrics, const std::string& type) {
  std::vector<double> out;
  for (const auto& r : read_metrics(metrics)) {
    if (r.value("type", "") == type) out.push_back(r["loss"].get<double>());
  }
  return out;
}

double mean(const std::vector<double>& v, size_t begin, size_t end) {
  double s = 0;
  for (size_t i = begin; i < end; ++i) s += v[i];
  return s / double(end - begin);
}

TEST(Trainer, TwentyStepsOfEveryRecipe) {
  ScratchDir dir;
  std::vector<fs::path> recipes;
  for (const auto& e : fs::directory_iterator(fs::path(LOWBIT_SOURCE_DIR) / "configs")) {
    if (e.path().extension() == ".yaml") recipes.push_back(e.path());
  }
  std::sort(recipes.begin(), recipes.end());
  ASSERT_FALSE(recipes.empty());
  // Recipes that fine-tune another recipe's model (model.init: runs/<that
  // recipe>/model.pt, or model.path: runs/<that recipe>/hf, the Hugging Face
  // checkpoint it exports) run after it, starting from what its 20-step run wrote.
  const std::regex base_line(R"(\n\s*(init|path):\s*runs/([A-Za-z0-9_]+)/(model\.pt|hf))");
  auto base_match = [&](const fs::path& p) {
    std::ifstream in(p);
    std::stringstream text;
    text << in.rdbuf();
    std::smatch m;
    const std::string s = text.str();
    return std::regex_search(s, m, base_line) ? std::vector<std::string>{m[1], m[2], m[3]}
                                              : std::vector<std::string>{};
  };
  auto base_of = [&](const fs::path& p) {
    const auto m = base_match(p);
    return m.empty() ? std::string() : m[1];
  };
  std::stable_partition(recipes.begin(), recipes.end(),
                        [&](const fs::path& p) { return base_of(p).empty(); });
  for (const fs::path& path : recipes) {
    SCOPED_TRACE(path.string());
    const std::string name = path.stem().string();
#if !defined(LOWBIT_WITH_TEXT) || !defined(LOWBIT_WITH_SENTENCEPIECE)
    // The Llama recipes train a SentencePiece tokenizer (or fine-tune what
    // such a run wrote); this build has no tokenizers or no SentencePiece.
    if (name.find("llama") != std::string::npos) continue;
#endif
    std::vector<std::string> overrides = {
        "train.epochs=0",          "train.steps=20",
        "schedule.warmup_steps=2", "data.train_limit=3000",
        "data.eval_limit=200",     "checkpoint.every=10",
        "checkpoint.resume=never", "checkpoint.dir=" + dir.file(name),
        "train.threads=1",         "train.grad_accum=1",
        "train.batch_size=16"};
    const auto base = base_match(path);
    if (!base.empty())
      overrides.push_back("model." + base[0] + "=" + dir.file(base[1] + "/" + base[2]));
    const config::Recipe recipe = config::load_recipe_file(path.string(), overrides);
    const RunResult result = run(recipe);
    EXPECT_EQ(result.end_step, 20);
    ASSERT_TRUE(result.final_evaluation.has_value());
    EXPECT_TRUE(std::isfinite(result.final_evaluation->loss));
    const std::vector<double> train = losses(recipe.log.metrics, "train");
    ASSERT_EQ(train.size(), 20u);
    // Learning on real data: the last five losses average below the first five.
    EXPECT_LT(mean(train, 15, 20), mean(train, 0, 5));
    EXPECT_EQ(list_checkpoints(recipe.checkpoint.dir), (std::vector<int64_t>{10, 20}));
    EXPECT_TRUE(fs::exists(fs::path(recipe.checkpoint.dir) / "model.pt"));
    EXPECT_GT(fs::file_size(recipe.log.plot), 1000u);
    // quantize_model's report, in the run folder (a Hugging Face checkpoint
    // is quantized while it is read, with no report).
    if (recipe.quant.enabled && recipe.model.name != "hf_causal_lm") {
      std::ifstream in(fs::path(recipe.checkpoint.dir) / "quantization.txt");
      std::stringstream table;
      table << in.rdbuf();
      EXPECT_NE(table.str().find("memory saved"), std::string::npos);
      if (name == "fortunes_int8_lora") {  // int8 base, mlp.fc2 in NF4 by override
        EXPECT_TRUE(std::regex_search(table.str(), std::regex(R"(blocks\.0\.attn\.qkv +int8 )")))
            << table.str();
        EXPECT_TRUE(std::regex_search(table.str(), std::regex(R"(blocks\.1\.mlp\.fc2 +nf4 )")))
            << table.str();
      }
    }
  }
}

// A run straight through and one resumed from its step-10 checkpoint in
// another directory end with bitwise equal weights and the same losses. On
// the CPU unless told: a GPU's numerics are not the CPU's, and `auto` would
// pick one where there is one. With `rotted_newer`, the resumed run's folder
// also holds the step-15 checkpoint with 64 bytes overwritten in its middle:
// the run must report it and fall back to step 10.
void expect_bit_identical_resume(const std::string& yaml, const std::string& name,
                                 const std::string& device = "cpu", bool rotted_newer = false) {
  ScratchDir dir;
  const std::vector<std::string> common = {"checkpoint.every=5", "checkpoint.keep=10",
                                           "log.progress=none", "train.threads=1",
                                           "device=" + device};
  std::vector<std::string> a_overrides = common, b_overrides = common;
  a_overrides.push_back("checkpoint.dir=" + dir.file("a"));
  b_overrides.push_back("checkpoint.dir=" + dir.file("b"));
  const config::Recipe a = config::load_recipe_text(yaml, name, name, a_overrides);
  const config::Recipe b = config::load_recipe_text(yaml, name, name, b_overrides);
  run(a);
  fs::create_directories(b.checkpoint.dir);
  fs::copy_file(checkpoint_path(a.checkpoint.dir, 10), checkpoint_path(b.checkpoint.dir, 10));
  if (rotted_newer) {
    const std::string rotted = checkpoint_path(b.checkpoint.dir, 15);
    fs::copy_file(checkpoint_path(a.checkpoint.dir, 15), rotted);
    std::fstream f(rotted, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(fs::file_size(rotted) / 2));
    f.write(std::string(64, '\x5a').c_str(), 64);
  }
  std::string output;
  const RunResult resumed = run(b, &output);
  if (rotted_newer) {
    EXPECT_NE(output.find("skipping unreadable checkpoint"), std::string::npos) << output;
    EXPECT_NE(output.find("checksum"), std::string::npos) << output;
  }
  EXPECT_EQ(resumed.start_step, 10);
  EXPECT_EQ(resumed.end_step, 20);

  const auto wa = testing::saved_weights(a, checkpoint_path(a.checkpoint.dir, 20));
  const auto wb = testing::saved_weights(b, checkpoint_path(b.checkpoint.dir, 20));
  for (const auto& [key, tensor] : wa) EXPECT_TRUE(tensor.equal(wb.at(key))) << key;
  const std::vector<double> la = losses(a.log.metrics, "train"),
                            lb = losses(b.log.metrics, "train");
  ASSERT_EQ(la.size(), 20u);
  ASSERT_EQ(lb.size(), 10u);  // the resumed run logged steps 11-20
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(la[10 + i], lb[i]) << "step " << 11 + i;
  // Evaluations of steps 15 and 20 (every 5 steps) agree too.
  const std::vector<double> ea = losses(a.log.metrics, "eval"), eb = losses(b.log.metrics, "eval");
  ASSERT_EQ(ea.size(), 4u);
  EXPECT_EQ(std::vector<double>(ea.begin() + 2, ea.end()), eb);
}

// AdamW8bit states (codes, absmax, percentile-clipping history) and dropout.
TEST(Trainer, ResumeIsBitIdenticalForTheGpt) {
  expect_bit_identical_resume(R"(
model: {name: char_gpt, block_size: 32, n_layer: 1, n_head: 2, n_embd: 32, dropout: 0.1}
data: {name: kjv, train_limit: 2000, eval_limit: 20}
optimizer: {name: adamw8bit, lr: 3.0e-3, weight_decay: 0.1, min_8bit_size: 256,
            percentile_clipping: 90}
schedule: {name: cosine, warmup_steps: 3, min_lr_ratio: 0.1}
train: {steps: 20, batch_size: 8, grad_accum: 2, grad_clip: 0.5, seed: 3, eval_every: 5}
)",
                              "gpt");
}

TEST(Trainer, ResumeIsBitIdenticalForTheMlpAcrossEpochs) {
  // 250 images in batches of 32: 8 batches per epoch, so the resumed run
  // continues mid-way through a reshuffled epoch.
  expect_bit_identical_resume(R"(
model: {name: mlp, hidden: [32], dropout: 0.2}
data: {name: fashion_mnist, train_limit: 250, eval_limit: 100}
optimizer: {name: rmsprop, lr: 1.0e-3, momentum: 0.9}
schedule: {name: linear, warmup_steps: 2}
train: {steps: 20, batch_size: 32, seed: 5, eval_every: 5}
)",
                              "mlp");
}

// NF4 base linears, fp16 LoRA adapters with dropout (torch's generator) on
// every linear but the head, AdamW8bit.
const char* kQloraRecipe = R"(
model: {name: char_gpt, block_size: 32, n_layer: 1, n_head: 2, n_embd: 32}
data: {name: fortunes, files: [computers, linux], eval_limit: 20}
quant: {type: nf4, block_size: 64}
lora: {r: 4, alpha: 8, dropout: 0.1, target: [qkv, proj, fc1, fc2]}
optimizer: {name: adamw8bit, lr: 3.0e-3, min_8bit_size: 64}
schedule: {name: cosine, warmup_steps: 3}
train: {steps: 20, batch_size: 8, seed: 7, eval_every: 5}
)";

TEST(Trainer, ResumeIsBitIdenticalForQlora) { expect_bit_identical_resume(kQloraRecipe, "qlora"); }

// The issue's rotted checkpoint: the newest one's bytes changed on disk. The
// checksum refuses it, the run resumes from the one before, and ends exactly
// where the uninterrupted run did.
TEST(Trainer, ARottedNewestCheckpointFallsBackBitIdentically) {
  expect_bit_identical_resume(kQloraRecipe, "rotted", "cpu", /*rotted_newer=*/true);
}

// The same on the OpenCL backend: 8-bit states and packed weights live on the
// device between steps and must reach the checkpoint exactly.
TEST(Trainer, ResumeIsBitIdenticalOnOpenCl) {
  LOWBIT_REQUIRE_OPENCL(device);
  expect_bit_identical_resume(std::string(kQloraRecipe) + "backend: opencl\n", "qlora_opencl");
}

bool cuda_here() { return kernels::cuda_built() && torch::cuda::is_available(); }

// On the GPU: 8-bit states and packed weights on the device, LoRA dropout from
// the GPU's generator (whose state the checkpoint carries).
TEST(Trainer, ResumeIsBitIdenticalOnCuda) {
  if (!cuda_here()) GTEST_SKIP() << "no CUDA backend in this build or no GPU";
  expect_bit_identical_resume(kQloraRecipe, "qlora_cuda", "cuda");
}

// Counts the tensors in a saved value (archives nest as objects) that are not
// on the CPU.
int64_t tensors_off_cpu(const c10::IValue& v) {
  int64_t n = 0;
  if (v.isTensor()) {
    n += v.toTensor().defined() && !v.toTensor().is_cpu() ? 1 : 0;
  } else if (v.isObject()) {
    for (const c10::IValue& slot : v.toObjectRef().slots()) n += tensors_off_cpu(slot);
  } else if (v.isList()) {
    for (const c10::IValue& e : v.toListRef()) n += tensors_off_cpu(e);
  } else if (v.isTuple()) {
    for (const c10::IValue& e : v.toTupleRef().elements()) n += tensors_off_cpu(e);
  } else if (v.isGenericDict()) {
    for (const auto& e : v.toGenericDict()) n += tensors_off_cpu(e.value());
  }
  return n;
}

// Read without a device mapping, a file's tensors come back where they were
// saved: every one must be a CPU tensor, so a CPU-only machine can read it.
void expect_only_cpu_tensors(const std::string& path) {
  torch::serialize::InputArchive archive;
  archive.load_from(path);
  int64_t keys = 0;
  for (const std::string& key : archive.keys()) {
    c10::IValue value;
    ASSERT_TRUE(archive.try_read(key, value)) << key;
    EXPECT_EQ(tensors_off_cpu(value), 0) << path << ": " << key;
    ++keys;
  }
  EXPECT_GE(keys, 2) << path;  // format and model (checkpoints: optimizer and trainer too)
}

// The default recipe on the GPU; its checkpoint resumed on the CPU, and that
// one's back on the GPU: the device is how to compute, not what is trained.
TEST(Trainer, CudaRunsResumeOnTheCpuAndBack) {
  if (!cuda_here()) GTEST_SKIP() << "no CUDA backend in this build or no GPU";
  ScratchDir dir;
  const std::string path =
      (fs::path(LOWBIT_SOURCE_DIR) / "configs" / "fashion_mnist_adamw8bit.yaml").string();
  auto recipe = [&](const std::string& device, int64_t steps) {
    return config::load_recipe_file(
        path, {"train.epochs=0", "train.steps=" + std::to_string(steps), "schedule.warmup_steps=5",
               "data.train_limit=3000", "data.eval_limit=500", "checkpoint.every=10",
               "checkpoint.keep=10", "checkpoint.dir=" + dir.file("run"), "log.progress=none",
               "device=" + device});
  };
  const config::Recipe gpu = recipe("cuda", 30);
  ASSERT_EQ(gpu.device, "cuda");
  std::string output;
  const RunResult trained = run(gpu, &output);
  EXPECT_NE(output.find("backend cuda:0"), std::string::npos) << output;
  EXPECT_EQ(trained.end_step, 30);
  ASSERT_TRUE(trained.final_evaluation.has_value());
  EXPECT_TRUE(std::isfinite(trained.final_evaluation->loss));
  std::vector<double> train = losses(gpu.log.metrics, "train");
  ASSERT_EQ(train.size(), 30u);
  EXPECT_LT(mean(train, 25, 30), mean(train, 0, 5));
  expect_only_cpu_tensors(checkpoint_path(gpu.checkpoint.dir, 30));
  expect_only_cpu_tensors((fs::path(gpu.checkpoint.dir) / "model.pt").string());

  const config::Recipe cpu = recipe("cpu", 40);
  const RunResult on_cpu = run(cpu, &output);
  EXPECT_NE(output.find("resumed from"), std::string::npos) << output;
  EXPECT_EQ(on_cpu.start_step, 30);
  EXPECT_EQ(on_cpu.end_step, 40);
  // The CPU carries on from the GPU's weights and optimizer states: its
  // losses stay down where the GPU left them, far below the first steps'.
  train = losses(cpu.log.metrics, "train");
  ASSERT_EQ(train.size(), 40u);
  EXPECT_LT(mean(train, 30, 35), mean(train, 0, 5));
  ASSERT_TRUE(on_cpu.final_evaluation.has_value());
  EXPECT_TRUE(std::isfinite(on_cpu.final_evaluation->loss));

  const RunResult back = run(recipe("cuda", 50));
  EXPECT_EQ(back.start_step, 40);
  EXPECT_EQ(back.end_step, 50);
  train = losses(gpu.log.metrics, "train");  // one run directory: one metrics file
  ASSERT_EQ(train.size(), 50u);
  EXPECT_LT(mean(train, 40, 45), mean(train, 0, 5));
}

// torch::optim keeps its states wherever they were made or loaded: the
// trainer saves them as CPU tensors and moves them to the run's device.
TEST(Trainer, TorchOptimizerStatesFollowTheDevice) {
  if (!cuda_here()) GTEST_SKIP() << "no CUDA backend in this build or no GPU";
  ScratchDir dir;
  const std::string yaml = R"(
model: {name: mlp, hidden: [16]}
data: {name: fashion_mnist, train_limit: 200, eval_limit: 50}
optimizer: {name: adamw, lr: 1.0e-3}
train: {steps: 10, batch_size: 20}
log: {progress: none}
)";
  auto recipe = [&](const std::string& device, int64_t steps) {
    return config::load_recipe_text(yaml, "r", "r",
                                    {"checkpoint.dir=" + dir.file("run"), "device=" + device,
                                     "train.steps=" + std::to_string(steps)});
  };
  EXPECT_EQ(run(recipe("cuda", 10)).end_step, 10);
  expect_only_cpu_tensors(checkpoint_path(dir.file("run"), 10));
  EXPECT_EQ(run(recipe("cpu", 15)).start_step, 10);
  const RunResult back = run(recipe("cuda", 20));
  EXPECT_EQ(back.start_step, 15);
  EXPECT_EQ(back.end_step, 20);
  expect_only_cpu_tensors(checkpoint_path(dir.file("run"), 20));
}

TEST(Trainer, ResumesOnlyUnderTheSameRecipe) {
  ScratchDir dir;
  const std::string yaml = R"(
model: {name: mlp, hidden: [16]}
data: {name: fashion_mnist, train_limit: 200, eval_limit: 50}
optimizer: {name: adam, lr: 1.0e-3}
train: {steps: 10, batch_size: 20}
log: {progress: none}
)";
  const std::string where = "checkpoint.dir=" + dir.file("run");
  run(config::load_recipe_text(yaml, "r", "r", {where}));
  try {
    run(config::load_recipe_text(yaml, "r", "r", {where, "optimizer.lr=2e-3", "train.steps=20"}));
    ADD_FAILURE() << "a changed learning rate must not resume silently";
  } catch (const config::RecipeError& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer.lr: 0.001 -> 0.002"), std::string::npos)
        << e.what();
  }
  // Training longer is a change a resume allows.
  const RunResult longer = run(config::load_recipe_text(yaml, "r", "r", {where, "train.steps=15"}));
  EXPECT_EQ(longer.start_step, 10);
  EXPECT_EQ(longer.end_step, 15);
  // A finished run has nothing left to do.
  EXPECT_FALSE(run(config::load_recipe_text(yaml, "r", "r", {where, "train.steps=15"}))
                   .final_evaluation.has_value());
}

}  // namespace
}  // namespace lowbit::train
