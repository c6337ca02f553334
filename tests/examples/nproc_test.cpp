// lowbit-train with several processes (issue 19): --nproc 2 and 3 train the same model as one
// process at the same global batch; ZeRO-1 gives data parallel's parameters, also with LAMB8bit
// and percentile clipping, and its checkpoints resume bit for bit on 2 ranks, with or without
// ZeRO, and on one process; ranks started by hand from the environment (torchrun style) refuse
// to train on different recipes; a rank killed or stopped ends the run with an error that
// names it, within the timeout.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/config/recipe.h"
#include "examples/train/metrics_log.h"
#include "examples/train/task.h"
#include "tests/examples/saved_weights.h"
#include "tests/support/cuda.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/spawn.h"


namespace lowbit::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using lowbit::testing::ScratchDir;

// Starts lowbit-train with `args` and the extra environment `env` ("NAME=VALUE"), stdout and
// stderr into `log`.
pid_t start(const std::vector<std::string>& args, const std::string& log,
            const std::vector<std::string>& env = {}) {
  std::vector<std::string> command = {LOWBIT_TRAIN_EXE};
  command.insert(command.end(), args.begin(), args.end());
  return lowbit::testing::spawn_logged(std::move(command), log, env);
}

// The exit status (128 + signal when killed); -1 when still running after `limit` (then it is
// killed, so no test leaves a process behind).
int wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Finished {
  int status = -1;
  std::string output;
};

Finished run_program(const std::string& log, const std::vector<std::string>& args) {
  fs::remove(log);
  Finished f;
  f.status = wait_for(start(args, log), std::chrono::seconds(300));
  f.output = read_text(log);
  return f;
}

std::vector<double> train_losses(const std::string& metrics) {
  std::vector<double> out;
  for (const auto& r : read_metrics(metrics))
    if (r["type"] == "train") out.push_back(r["loss"].get<double>());
  return out;
}

// The largest |a - b| over the parameters of two model.pt files of `recipe`.
double max_parameter_difference(const config::Recipe& recipe, const std::string& a,
                                 const std::string& b) {
  const auto pa = testing::saved_weights(recipe, a), pb = testing::saved_weights(recipe, b);
  double worst = 0.0;
  for (const auto& [key, tensor] : pa)
    worst = std::max(worst, (tensor - pb.at(key)).abs().max().item<double>());
  return worst;
}

// The run's recipe once in one process and once with `nproc` ranks, each in its own
// checkpoint.dir; returns the two directories.
std::pair<std::string, std::string> one_and_many(const ScratchDir& dir, const std::string& yaml,
                                                 int nproc,
                                                 const std::vector<std::string>& extra = {}) {
  dir.write("recipe.yaml", yaml);
  const std::string one = dir.file("one"), many = dir.file("many");
  std::vector<std::string> args = {dir.file("recipe.yaml"), "--set", "checkpoint.dir=" + one};
  const Finished alone = run_program(dir.file("one.log"), args);
  EXPECT_EQ(alone.status, 0) << alone.output;
  args = {dir.file("recipe.yaml"), "--set", "checkpoint.dir=" + many, "--nproc",
          std::to_string(nproc)};
  args.insert(args.end(), extra.begin(), extra.end());
  const Finished ranks = run_program(dir.file("many.log"), args);
  EXPECT_EQ(ranks.status, 0) << ranks.output;
  // Rank 0 alone prints: one header, one summary.
  EXPECT_EQ(ranks.output.find("lowbit-train " + dir.file("recipe.yaml")),
            ranks.output.rfind("lowbit-train " + dir.file("recipe.yaml")))
      << ranks.output;
  EXPECT_NE(ranks.output.find("processes: " + std::to_string(nproc)), std::string::npos)
      << ranks.output;
  return {one, many};
}

// A small character GPT on the KJV; AdamW8bit with 8-bit states on every matrix
// (min_8bit_size 256), no dropout (a rank draws masks for its rows only, so with dropout the
// runs would agree in distribution, not in value).
const char* kGptRecipe = R"(
device: cpu
model: {name: char_gpt, block_size: 32, n_layer: 1, n_head: 2, n_embd: 32}
data: {name: kjv, train_limit: 2000, eval_limit: 20}
optimizer: {name: adamw8bit, lr: 3.0e-3, weight_decay: 0.1, min_8bit_size: 256}
schedule: {name: cosine, warmup_steps: 3, min_lr_ratio: 0.1}
train: {steps: 20, batch_size: 8, grad_accum: 2, grad_clip: 0.5, seed: 3, threads: 1}
log: {progress: lines, every: 5}
)";

// Trains `yaml` (kGptRecipe on some device) in one process and on 2 ranks with `extra`
// arguments, and expects the two runs to agree within data parallelism's rounding.
void two_ranks_train_like_one_process(const std::string& yaml,
                                      const std::vector<std::string>& extra = {}) {
  ScratchDir dir;
  const auto [one, many] = one_and_many(dir, yaml, 2, extra);
  const std::vector<double> a = train_losses(one + "/metrics.jsonl");
  const std::vector<double> b = train_losses(many + "/metrics.jsonl");
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  // Step 1 starts from the same weights on the same 16 windows, so the losses differ only by
  // float32 rounding of the sums in another order (a relative 1e-7 per addition: 1e-6 is above
  // it, and far below what one other window in the batch would change, about 1e-2).
  EXPECT_NEAR(a[0], b[0], 1e-6 * std::abs(a[0]));
  // Later steps follow the updates: that rounding can move an 8-bit state element across a
  // code boundary, and AdamW then moves that weight by up to lr differently. Measured: a
  // relative 2e-6 at most over the 20 steps; 1e-4 leaves room for other compilers' rounding.
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * std::abs(a[i])) << i;
  // AdamW moves a weight by at most about lr (3e-3) per step, and a flipped code changes one
  // step's move by a fraction of that; without flips the difference is float rounding.
  // Measured: 2.6e-4.
  const config::Recipe recipe = config::load_recipe_file(dir.file("recipe.yaml"));
  const double worst = max_parameter_difference(recipe, one + "/model.pt", many + "/model.pt");
  std::cout << "largest weight difference, 1 process vs 2: " << worst << "\n";
  EXPECT_LT(worst, 3e-3);
  // Only rank 0 writes the run's files.
  EXPECT_TRUE(fs::exists(many + "/model.pt"));
  EXPECT_TRUE(fs::exists(many + "/step-00000020.ckpt"));
}

TEST(LowbitTrainNproc, TwoRanksTrainTheGptOneProcessTrains) {
  two_ranks_train_like_one_process(kGptRecipe);
}

// Issue 20: ranks on GPUs, with ZeRO-1 (data parallel's bits, zero.h). The test machine has one
// GPU, so the two ranks share it and Gloo carries their CUDA tensors (a machine with a GPU per
// rank uses NCCL). The sums differ from one process's by cuBLAS's rounding in another order:
// the CPU test's tolerances hold.
TEST(LowbitTrainNproc, TwoZeroOneRanksOnTheGpuTrainTheGptOneGpuProcessTrains) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  std::string yaml = kGptRecipe;
  yaml.replace(yaml.find("device: cpu"), 11, "device: cuda");
  two_ranks_train_like_one_process(yaml, {"--set", "distributed.zero=true"});
}

TEST(LowbitTrainNproc, ZeroOneGivesDataParallelsParameters) {
  ScratchDir dir;
  dir.write("recipe.yaml", kGptRecipe);
  const std::string recipe_file = dir.file("recipe.yaml");
  const std::string plain = dir.file("plain"), zero = dir.file("zero");
  const Finished a = run_program(
      dir.file("plain.log"), {recipe_file, "--set", "checkpoint.dir=" + plain, "--nproc", "2"});
  ASSERT_EQ(a.status, 0) << a.output;
  const Finished b = run_program(dir.file("zero.log"),
                                 {recipe_file, "--set", "checkpoint.dir=" + zero, "--set",
                                  "distributed.zero=true", "--nproc", "2"});
  ASSERT_EQ(b.status, 0) << b.output;
  EXPECT_NE(b.output.find("ZeRO-1"), std::string::npos) << b.output;
  // The same averaged gradients and the same blocks quantized the same way (zero.h): the
  // same bits.
  const config::Recipe recipe = config::load_recipe_file(recipe_file);
  EXPECT_EQ(max_parameter_difference(recipe, plain + "/model.pt", zero + "/model.pt"), 0.0);
  EXPECT_EQ(train_losses(plain + "/metrics.jsonl"), train_losses(zero + "/metrics.jsonl"));
  // Each rank keeps about half the states.
  const auto summary = read_metrics(zero + "/metrics.jsonl").back();
  ASSERT_EQ(summary["type"], "summary");
  const auto bytes = summary["rank_optimizer_state_bytes"].get<std::vector<int64_t>>();
  ASSERT_EQ(bytes.size(), 2u);
  const auto whole = read_metrics(plain + "/metrics.jsonl").back()["optimizer_state_bytes"];
  EXPECT_NEAR(double(bytes[0] + bytes[1]), whole.get<double>(), 0.05 * whole.get<double>());
  EXPECT_LT(double(std::max(bytes[0], bytes[1])), 0.6 * whole.get<double>());
  // Rank 0 writes the checkpoint, with the states gathered from both ranks.
  EXPECT_TRUE(fs::exists(zero + "/step-00000020.ckpt"));
}

// Runs `args` (after the recipe file) and expects it to finish; returns its output.
std::string run_ok(const ScratchDir& dir, const std::string& name,
                   const std::vector<std::string>& args) {
  std::vector<std::string> all = {dir.file("recipe.yaml"), "--set",
                                  "checkpoint.dir=" + dir.file(name)};
  all.insert(all.end(), args.begin(), args.end());
  const Finished f = run_program(dir.file(name + ".log"), all);
  EXPECT_EQ(f.status, 0) << name << ":\n" << f.output;
  return f.output;
}

// kGptRecipe for 10 steps with a checkpoint at step 5; `kZero` and `kTwo` pick how it runs.
const std::vector<std::string> kTenSteps = {"--set", "train.steps=10", "--set",
                                            "checkpoint.every=5"};
const std::vector<std::string> kTwo = {"--nproc", "2"};
const std::vector<std::string> kZero = {"--nproc", "2", "--set", "distributed.zero=true"};

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<std::string> resume_from(const std::string& checkpoint) {
  return {"--set", "checkpoint.resume=" + checkpoint};
}

// A ZeRO-1 run stopped after its checkpoint of step 5 (the newer files removed, as a kill
// during step 6 would leave the run) and resumed ends with the uninterrupted run's bits.
TEST(LowbitTrainNproc, ZeroOneResumesBitExactly) {
  ScratchDir dir;
  dir.write("recipe.yaml", kGptRecipe);
  const config::Recipe recipe = config::load_recipe_file(dir.file("recipe.yaml"));
  const std::string run = dir.file("run");
  run_ok(dir, "run", kTenSteps + kZero);
  ASSERT_TRUE(fs::exists(run + "/step-00000005.ckpt"));
  ASSERT_TRUE(fs::exists(run + "/step-00000010.ckpt"));
  const std::vector<double> uninterrupted = train_losses(run + "/metrics.jsonl");
  ASSERT_EQ(uninterrupted.size(), 10u);
  fs::copy_file(run + "/model.pt", dir.file("uninterrupted.pt"));
  fs::remove(run + "/step-00000010.ckpt");
  fs::remove(run + "/model.pt");
  const std::string output = run_ok(dir, "run", kTenSteps + kZero);
  EXPECT_NE(output.find("resumed from " + run + "/step-00000005.ckpt at step 5"),
            std::string::npos)
      << output;
  // The same gradients, and every rank's shards of the optimizer states as they were: the
  // same bits. States started afresh at step 6 would move the weights by about lr.
  EXPECT_EQ(max_parameter_difference(recipe, dir.file("uninterrupted.pt"), run + "/model.pt"),
            0.0);
  EXPECT_EQ(train_losses(run + "/metrics.jsonl"), uninterrupted);
}

// One checkpoint format whatever the number of processes: ZeRO-1's checkpoint is the state dict
// the single-process optimizer writes (dist::ZeroOptimizer::save), so it resumes without ZeRO
// and on one process, and ZeRO-1 resumes data parallel's (one process's format).
TEST(LowbitTrainNproc, ZeroOneCheckpointsResumeOnAnyNumberOfProcesses) {
  ScratchDir dir;
  dir.write("recipe.yaml", kGptRecipe);
  const config::Recipe recipe = config::load_recipe_file(dir.file("recipe.yaml"));
  const auto differ = [&](const std::string& a, const std::string& b) {
    return max_parameter_difference(recipe, dir.file(a) + "/model.pt", dir.file(b) + "/model.pt");
  };
  const std::string zero_ckpt = dir.file("zero") + "/step-00000005.ckpt";
  const std::string plain_ckpt = dir.file("plain") + "/step-00000005.ckpt";
  run_ok(dir, "zero", kTenSteps + kZero);
  run_ok(dir, "plain", kTenSteps + kTwo);
  ASSERT_EQ(differ("zero", "plain"), 0.0);  // ZeroOneGivesDataParallelsParameters
  // 2 ranks: ZeRO-1's checkpoint resumed by data parallel (each rank's single-process
  // optimizer loads it whole), and data parallel's resumed with ZeRO-1 (each rank takes its
  // shards): both the uninterrupted run's bits.
  run_ok(dir, "plain_from_zero", kTenSteps + kTwo + resume_from(zero_ckpt));
  EXPECT_EQ(differ("plain_from_zero", "zero"), 0.0);
  const std::string output =
      run_ok(dir, "zero_from_plain", kTenSteps + kZero + resume_from(plain_ckpt));
  EXPECT_NE(output.find("resumed from " + plain_ckpt + " at step 5"), std::string::npos)
      << output;
  EXPECT_EQ(differ("zero_from_plain", "zero"), 0.0);
  // 2 -> 1: one process resumes ZeRO-1's checkpoint exactly as data parallel's, whose
  // optimizer state is the single-process optimizer's own save.
  run_ok(dir, "one_from_zero", kTenSteps + resume_from(zero_ckpt));
  run_ok(dir, "one_from_plain", kTenSteps + resume_from(plain_ckpt));
  EXPECT_EQ(differ("one_from_zero", "one_from_plain"), 0.0);
  EXPECT_EQ(train_losses(dir.file("one_from_zero") + "/metrics.jsonl"),
            train_losses(dir.file("one_from_plain") + "/metrics.jsonl"));
  // It differs from the 2-rank runs by the all-reduce's rounding alone over steps 6-10 (see
  // TwoRanksTrainTheGptOneProcessTrains: 2.6e-4 over 20 steps); states started afresh at
  // step 6 differ by far more (0.56 where the ZeRO-1 resume skipped loading them). Measured:
  // 3.5e-6; the bound leaves room for a state code that rounding flips (a move of up to lr).
  const double one_vs_two = differ("one_from_zero", "zero");
  std::cout << "largest weight difference, resumed on 1 process vs 2: " << one_vs_two << "\n";
  EXPECT_LT(one_vs_two, 3e-3);
}

// LAMB8bit's trust ratio, max_unorm and percentile clipping decide from norms over whole
// tensors: under ZeRO-1 each rank sums its shards' and one all-reduce adds them, so the run
// follows one process's up to the rounding of those sums and of the gradients' all-reduce.
TEST(LowbitTrainNproc, ZeroOneTrainsLambWithWholeTensorNorms) {
  ScratchDir dir;
  std::string yaml = kGptRecipe;
  yaml.replace(yaml.find("{name: adamw8bit"), std::string("{name: adamw8bit").size(),
               "{name: lamb8bit, percentile_clipping: 90, max_unorm: 1.0");
  yaml.replace(yaml.find("steps: 20"), std::string("steps: 20").size(), "steps: 10");
  const auto [one, many] = one_and_many(dir, yaml, 2, {"--set", "distributed.zero=true"});
  EXPECT_NE(read_text(dir.file("many.log")).find("ZeRO-1"), std::string::npos);
  const std::vector<double> a = train_losses(one + "/metrics.jsonl");
  const std::vector<double> b = train_losses(many + "/metrics.jsonl");
  ASSERT_EQ(a.size(), 10u);
  ASSERT_EQ(b.size(), 10u);
  // As TwoRanksTrainTheGptOneProcessTrains: step 1 differs by float32 sums in another order,
  // later steps also by a state code that rounding moves across a boundary.
  EXPECT_NEAR(a[0], b[0], 1e-6 * std::abs(a[0]));
  for (size_t i = 0; i < b.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * std::abs(a[i])) << i;
}

// fp32_params picks parameters by name, and ZeRO-1 cuts the states by blocks: refused on every
// rank with the key and what to change, before any step.
TEST(LowbitTrainNproc, ZeroOneRefusesFp32Params) {
  ScratchDir dir;
  std::string yaml = kGptRecipe;
  yaml.replace(yaml.find("min_8bit_size: 256}"), std::string("min_8bit_size: 256}").size(),
               "min_8bit_size: 256, fp32_params: [\".\"]}");
  dir.write("recipe.yaml", yaml);
  const Finished f = run_program(dir.file("run.log"),
                                 {dir.file("recipe.yaml"), "--set",
                                  "checkpoint.dir=" + dir.file("run"), "--set",
                                  "distributed.zero=true", "--nproc", "2"});
  EXPECT_NE(f.status, 0) << f.output;
  EXPECT_NE(f.output.find("optimizer.fp32_params: distributed.zero shards the states by blocks"),
            std::string::npos)
      << f.output;
  EXPECT_FALSE(fs::exists(dir.file("run") + "/metrics.jsonl"));  // refused before training
  EXPECT_FALSE(fs::exists(dir.file("run") + "/model.pt"));
}

// Batches of 7 over 3 ranks split 2 + 2 + 3, and each epoch's last batch of 100 % 7 = 2
// images leaves rank 0 with none: the weights of the shard losses keep the batch's mean.
// torch's AdamW (fp32 states), so the runs differ by float rounding only.
TEST(LowbitTrainNproc, ThreeRanksSplitUnevenBatchesAsOneProcess) {
  ScratchDir dir;
  const auto [one, many] = one_and_many(dir, R"(
device: cpu
model: {name: mlp, hidden: [32]}
data: {name: fashion_mnist, train_limit: 100, eval_limit: 50}
optimizer: {name: adamw, lr: 1.0e-3}
schedule: {name: constant}
train: {epochs: 2, batch_size: 7, seed: 5, threads: 1}
log: {progress: none}
)",
                                        3);
  const std::vector<double> a = train_losses(one + "/metrics.jsonl");
  const std::vector<double> b = train_losses(many + "/metrics.jsonl");
  ASSERT_EQ(a.size(), 30u);
  ASSERT_EQ(b.size(), 30u);
  // float32 sums in another order, through 30 AdamW steps of lr 1e-3: relative 1e-4.
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * std::abs(a[i])) << i;
  const config::Recipe recipe = config::load_recipe_file(dir.file("recipe.yaml"));
  EXPECT_LT(max_parameter_difference(recipe, one + "/model.pt", many + "/model.pt"), 1e-4);
}

TEST(LowbitTrainNproc, ArgumentErrorsStopBeforeAnyRankStarts) {
  ScratchDir dir;
  const auto expect_refused = [&](const std::vector<std::string>& args, const std::string& text,
                                  const std::vector<std::string>& env = {}) {
    const std::string log = dir.file("refused.log");
    fs::remove(log);
    EXPECT_EQ(wait_for(start(args, log, env), std::chrono::seconds(60)), 2);
    const std::string output = read_text(log);
    EXPECT_NE(output.find(text), std::string::npos) << output;
    EXPECT_EQ(output.find("ranks 0-"), std::string::npos) << output;  // nothing launched
  };
  expect_refused({"--nproc", "0"}, "--nproc: '0' is not a number of processes in [1, 1024]");
  expect_refused({"--nproc"}, "--nproc needs a number of processes");
  expect_refused({"--nproc", "2", "--print-recipe"}, "--nproc goes with training");
  expect_refused({"--nproc=2"}, "--nproc launches the ranks itself, and RANK or WORLD_SIZE is set",
                 {"RANK=0", "WORLD_SIZE=2"});
}

// In one process, without Gloo: two ranks' weighted losses of a micro-batch are different
// rows and average to the batch's loss, when the rows split evenly (GPT windows, 8 over 2) and
// when they do not (7 images over 2: 3 and 4).
TEST(LowbitTrainNproc, ShardLossesAverageToTheBatchLoss) {
  for (const char* yaml : {R"(
device: cpu
model: {name: char_gpt, block_size: 32, n_layer: 1, n_head: 2, n_embd: 32}
data: {name: kjv, train_limit: 500, eval_limit: 4}
optimizer: {name: adamw8bit}
train: {steps: 1, batch_size: 8, seed: 3}
)",
                           R"(
device: cpu
model: {name: mlp, hidden: [16]}
data: {name: fashion_mnist, train_limit: 100, eval_limit: 10}
optimizer: {name: adamw}
train: {steps: 1, batch_size: 7, seed: 3}
)"}) {
    const config::Recipe recipe = config::load_recipe_text(yaml, "shard", "test");
    const auto loss = [&](DataShard shard) {
      torch::NoGradGuard no_grad;
      return make_task(recipe, torch::kCPU, shard)->loss(4).item<double>();
    };
    const double whole = loss({}), first = loss({0, 2}), second = loss({1, 2});
    EXPECT_NE(first, second) << recipe.model.name;  // different rows
    // float32 means over 3-8 rows against one over the batch: relative 1e-6 covers the
    // rounding, and another split would miss by far more.
    EXPECT_NEAR((first + second) / 2, whole, 1e-6 * whole) << recipe.model.name;
  }
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

// Ranks started by hand, as on several hosts: each with RANK, WORLD_SIZE, MASTER_ADDR and
// MASTER_PORT; here they read different recipes (another lr), and both stop before training.
TEST(LowbitTrainNproc, RanksFromTheEnvironmentRefuseDifferentRecipes) {
  ScratchDir dir;
  dir.write("recipe.yaml", kGptRecipe);
  const std::string port = std::to_string(free_port());
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    pids.push_back(start({dir.file("recipe.yaml"), "--set", "checkpoint.dir=" + dir.file("run"),
                          "--set", r == 0 ? "optimizer.lr=3e-3" : "optimizer.lr=1e-3"},
                         dir.file("rank" + std::to_string(r) + ".log"),
                         {"RANK=" + std::to_string(r), "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
                          "MASTER_PORT=" + port}));
  }
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(wait_for(pids[size_t(r)], std::chrono::seconds(120)), 2) << r;
    const std::string log = read_text(dir.file("rank" + std::to_string(r) + ".log"));
    EXPECT_NE(log.find("lowbit-train (rank " + std::to_string(r) +
                       " of 2): the ranks disagree on the resolved recipe: rank 1 differs from "
                       "rank 0"),
              std::string::npos)
        << log;
  }
  EXPECT_FALSE(fs::exists(dir.file("run") + "/model.pt"));
}

// A run long enough to be stopped in the middle; a short distributed.timeout.
const char* kLongRecipe = R"(
device: cpu
model: {name: char_gpt, block_size: 32, n_layer: 1, n_head: 2, n_embd: 32}
data: {name: kjv, train_limit: 2000, eval_limit: 20}
optimizer: {name: adamw8bit, lr: 1.0e-3}
schedule: {name: constant}
train: {steps: 1000000, batch_size: 8, seed: 3, threads: 1}
distributed: {timeout: 8}
log: {progress: lines, every: 1}
)";

// Starts `lowbit-train --nproc 2` on kLongRecipe and waits until rank 0 has logged a step;
// returns the launcher's pid and the ranks' pids from its first line.
std::pair<pid_t, std::vector<pid_t>> start_long_run(const ScratchDir& dir) {
  dir.write("recipe.yaml", kLongRecipe);
  const pid_t launcher = start({dir.file("recipe.yaml"), "--set",
                                "checkpoint.dir=" + dir.file("run"), "--nproc", "2"},
                               dir.file("run.log"));
  const std::regex pids_line(R"(ranks 0-1 on 127\.0\.0\.1:\d+ \(pids (\d+) (\d+)\))");
  std::vector<pid_t> ranks;
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    const std::string log = read_text(dir.file("run.log"));
    std::smatch m;
    if (ranks.empty() && std::regex_search(log, m, pids_line))
      ranks = {pid_t(std::stoi(m[1])), pid_t(std::stoi(m[2]))};
    if (!ranks.empty() && log.find("step 2/") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(ranks.size(), 2u) << read_text(dir.file("run.log"));
  return {launcher, ranks};
}

TEST(LowbitTrainNproc, AKilledRankStopsTheRunNamingIt) {
  ScratchDir dir;
  const auto [launcher, ranks] = start_long_run(dir);
  ASSERT_EQ(ranks.size(), 2u);
  const auto killed_at = Clock::now();
  ::kill(ranks[1], SIGKILL);
  EXPECT_EQ(wait_for(launcher, std::chrono::seconds(60)), 1);
  // Well within distributed.timeout plus the launcher's 10 s grace: the launcher sees the
  // death at once and stops rank 0.
  EXPECT_LT(Clock::now() - killed_at, std::chrono::seconds(18));
  const std::string log = read_text(dir.file("run.log"));
  EXPECT_NE(log.find("lowbit-train --nproc 2: rank 1 (pid " + std::to_string(ranks[1]) +
                     ") was killed by signal 9"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("failed: rank 1 was killed by signal 9"), std::string::npos) << log;
  EXPECT_NE(::kill(ranks[0], 0), 0) << "rank 0 outlived the run";
}

TEST(LowbitTrainNproc, AStoppedRankTimesOutTheOthers) {
  ScratchDir dir;
  const auto [launcher, ranks] = start_long_run(dir);
  ASSERT_EQ(ranks.size(), 2u);
  const auto stopped_at = Clock::now();
  ::kill(ranks[1], SIGSTOP);  // alive but silent: only the timeout can tell
  EXPECT_EQ(wait_for(launcher, std::chrono::seconds(60)), 1);
  // distributed.timeout is 8 s; the launcher then ends the stopped rank too.
  EXPECT_LT(Clock::now() - stopped_at, std::chrono::seconds(30));
  const std::string log = read_text(dir.file("run.log"));
  EXPECT_NE(log.find("lowbit-train (rank 0 of 2): lowbit::dist:"), std::string::npos) << log;
  EXPECT_NE(log.find("8000 ms"), std::string::npos) << log;
  EXPECT_NE(log.find("lowbit-train --nproc 2: rank 0 (pid " + std::to_string(ranks[0]) +
                     ") exited with status 1"),
            std::string::npos)
      << log;
  EXPECT_NE(::kill(ranks[1], 0), 0) << "the stopped rank outlived the run";
}

}  // namespace
}  // namespace lowbit::train
