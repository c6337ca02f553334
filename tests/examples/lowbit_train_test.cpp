// The lowbit-train program: validation errors stop before any training with
// exit status 2 and one message; --print-recipe and --plot; and runs killed
// with SIGKILL at random moments, resumed each time, end bit-identical to a
// run that was never interrupted.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/config/recipe.h"
#include "examples/train/checkpoint.h"
#include "examples/train/metrics_log.h"
#include "kernels/blas_core.h"
#include "tests/examples/saved_weights.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/spawn.h"


namespace lowbit::train {
namespace {

namespace fs = std::filesystem;
using lowbit::testing::ScratchDir;

struct Finished {
  int status = -1;  // exit status, or 128 + signal
  std::string output;
};

// Starts lowbit-train with `args`, stdout and stderr into `log`.
pid_t start(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> command = {LOWBIT_TRAIN_EXE};
  command.insert(command.end(), args.begin(), args.end());
  return lowbit::testing::spawn_logged(std::move(command), log);
}

int wait_for(pid_t pid) {
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Finished run_program(const ScratchDir& dir, const std::vector<std::string>& args) {
  const std::string log = dir.file("output.log");
  fs::remove(log);
  Finished f;
  f.status = wait_for(start(args, log));
  std::ifstream in(log);
  std::ostringstream text;
  text << in.rdbuf();
  f.output = text.str();
  return f;
}

TEST(LowbitTrain, ValidationErrorsStopBeforeTraining) {
  ScratchDir dir;
  const std::string run_dir = dir.file("run");
  const Finished bad =
      run_program(dir, {"--set", "optimizer.lr=-1", "--set", "checkpoint.dir=" + run_dir});
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.output.find("--set optimizer.lr: value '-1' is out of range; allowed: a number "
                            "in (0, 10]"),
            std::string::npos)
      << bad.output;
  EXPECT_FALSE(fs::exists(run_dir));  // nothing ran, nothing was written

  dir.write("recipe.yaml", "model:\n  name: mlp\n  hiden: [10]\n");
  const Finished typo = run_program(dir, {dir.file("recipe.yaml")});
  EXPECT_EQ(typo.status, 2);
  EXPECT_NE(typo.output.find("recipe.yaml line 3: model.hiden: unknown key (did you mean "
                             "model.hidden?)"),
            std::string::npos)
      << typo.output;
  EXPECT_EQ(run_program(dir, {"--frobnicate"}).status, 2);
  EXPECT_EQ(run_program(dir, {dir.file("missing.yaml")}).status, 2);
}

TEST(LowbitTrain, GenerateAndMergeCheckTheirArgumentsFirst) {
  ScratchDir dir;
  const Finished no_recipe = run_program(dir, {"--generate"});
  EXPECT_EQ(no_recipe.status, 2);
  EXPECT_NE(no_recipe.output.find("--generate needs the RECIPE.yaml of the run"), std::string::npos)
      << no_recipe.output;
  const Finished stray = run_program(dir, {"--prompt", "Hello"});
  EXPECT_EQ(stray.status, 2);
  EXPECT_NE(stray.output.find("--prompt goes with --generate"), std::string::npos) << stray.output;
  // An image recipe has nothing to generate or merge: refused before any
  // data is read.
  const std::string recipe =
      (fs::path(LOWBIT_SOURCE_DIR) / "configs" / "fashion_mnist_adamw8bit.yaml").string();
  const Finished image = run_program(dir, {recipe, "--merge", dir.file("out"), "--set",
                                           "checkpoint.dir=" + dir.file("run")});
  EXPECT_EQ(image.status, 2);
  EXPECT_NE(image.output.find("--merge: model.name mlp is not a language model"), std::string::npos)
      << image.output;
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

TEST(LowbitTrain, PrintsTheResolvedDefaultRecipeAndPlotsMetrics) {
  ScratchDir dir;
  const Finished printed = run_program(dir, {"--print-recipe", "--set", "train.seed=7"});
  EXPECT_EQ(printed.status, 0) << printed.output;
  // The embedded default recipe, resolved: it parses back as a recipe.
  const config::Recipe again = config::load_recipe_text(printed.output, "again", "printed");
  EXPECT_EQ(again.train.seed, 7);
  EXPECT_EQ(again.data.name, "fashion_mnist");
  EXPECT_EQ(again.checkpoint.dir, "runs/fashion_mnist_adamw8bit");

  dir.write("m.jsonl",
            "{\"type\": \"train\", \"step\": 1, \"loss\": 2.0, \"lr\": 0.1}\n"
            "{\"type\": \"train\", \"step\": 2, \"loss\": 1.0, \"lr\": 0.1}\n");
  const Finished plotted = run_program(dir, {"--plot", dir.file("m.jsonl")});
  EXPECT_EQ(plotted.status, 0) << plotted.output;
  EXPECT_TRUE(fs::exists(dir.file("m.svg")));
}

// OpenBLAS picks its kernels as it loads, from the CPU's model; where it falls back to kernels
// without AVX2 on a CPU that has it (Debian 12's 0.3.21 on Emerald Rapids chose its SSE3
// "Prescott" kernels), lowbit-train sets OPENBLAS_CORETYPE and starts again, and its header says
// so. The test process loads the same OpenBLAS as the program: what it chose here (before this
// test program started itself again, if it did: LOWBIT_BLAS_REPLACED) is what the program,
// started without either variable, must find.
TEST(LowbitTrain, RunsOpenBlasWithTheCpusWideKernelsAndSaysWhichInItsHeader) {
  ScratchDir dir;
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  const char* replaced = std::getenv("LOWBIT_BLAS_REPLACED");
  const bool reloaded = replaced && *replaced;
  if (set && *set && !reloaded)
    GTEST_SKIP() << "OPENBLAS_CORETYPE=" << set << " is set: this process chose no kernels itself";
  const kernels::BlasCore found =
      reloaded ? kernels::blas_core_of(replaced) : kernels::blas_core();
  const std::string saved_set = set ? set : "", saved_replaced = reloaded ? replaced : "";
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv("LOWBIT_BLAS_REPLACED");
  const Finished run = run_program(
      dir, {"--set", "train.epochs=0", "--set", "train.steps=2", "--set", "schedule.warmup_steps=1",
            "--set", "train.eval_every=1000", "--set", "data.train_limit=256", "--set",
            "data.eval_limit=64", "--set", "log.progress=none", "--set",
            "checkpoint.dir=" + dir.file("run")});
  if (!saved_set.empty()) setenv("OPENBLAS_CORETYPE", saved_set.c_str(), 1);
  if (reloaded) setenv("LOWBIT_BLAS_REPLACED", saved_replaced.c_str(), 1);
  ASSERT_EQ(run.status, 0) << run.output;
  const size_t at = run.output.find("\n  BLAS: ");
  if (found.loaded.empty()) {
    EXPECT_EQ(at, std::string::npos) << "no OpenBLAS here, yet the header names one:\n" << run.output;
    return;
  }
  ASSERT_NE(at, std::string::npos) << run.output;
  const std::string line = run.output.substr(at + 3, run.output.find('\n', at + 1) - at - 3);
  EXPECT_EQ(line.rfind("BLAS: OpenBLAS", 0), 0u) << line;
  if (found.wanted.empty()) {
    EXPECT_NE(line.find(", " + found.loaded + " kernels"), std::string::npos) << line;
    EXPECT_EQ(line.find("set by lowbit"), std::string::npos) << line;
  } else {
    EXPECT_NE(line.find(", " + found.wanted + " kernels (OPENBLAS_CORETYPE=" + found.wanted +
                        ", set by lowbit: it had chosen " + found.loaded),
              std::string::npos)
        << line;
  }
}

// On the CPU wherever the test runs: the runs compare bit for bit.
const char* kKillRecipe = R"(
device: cpu
model: {name: mlp, hidden: [64], dropout: 0.1}
data: {name: fashion_mnist, train_limit: 3000, eval_limit: 300}
optimizer: {name: adamw8bit, lr: 1.0e-3}
schedule: {name: cosine, warmup_steps: 20}
train: {steps: 3000, batch_size: 32, grad_accum: 2, seed: 11, threads: 1, eval_every: 750}
checkpoint: {every: 3, keep: 2}
log: {progress: lines, every: 100}
)";

TEST(LowbitTrain, SurvivesSigkillAtRandomMoments) {
  ScratchDir dir;
  dir.write("recipe.yaml", kKillRecipe);
  const std::string recipe = dir.file("recipe.yaml");
  const std::string straight_dir = dir.file("straight"), killed_dir = dir.file("killed");
  const auto begin = std::chrono::steady_clock::now();
  ASSERT_EQ(run_program(dir, {recipe, "--set", "checkpoint.dir=" + straight_dir}).status, 0);
  const auto straight_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - begin)
                               .count();

  // Reproducible from the seed the trace prints.
  const unsigned seed = unsigned(std::chrono::steady_clock::now().time_since_epoch().count());
  SCOPED_TRACE("kill delays seeded with " + std::to_string(seed) + ", straight run " +
               std::to_string(straight_ms) + " ms");
  std::mt19937 rng(seed);
  // Startup (reading Fashion-MNIST) takes about half a second, the 3000 steps
  // about 5 s on a Zen 4 core: kills land before, between and during saves.
  // Each killed run resumes where the last one stopped; with every delay
  // below a fifth of the straight run, the five together cannot finish it,
  // however fast the machine.
  std::uniform_int_distribution<int> delay_ms(300, std::max(400, int(straight_ms / 5)));
  const std::vector<std::string> args = {recipe, "--set", "checkpoint.dir=" + killed_dir};
  int killed = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const pid_t pid = start(args, dir.file("killed.log"));
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ::kill(pid, SIGKILL);
    if (wait_for(pid) == 128 + SIGKILL) ++killed;
    // Every checkpoint left behind is complete and readable.
    for (int64_t step : list_checkpoints(killed_dir)) {
      EXPECT_NO_THROW(Checkpoint(checkpoint_path(killed_dir, step))) << "step " << step;
    }
  }
  EXPECT_GE(killed, 3) << "most kills should land while the run is still going";
  const Finished last = run_program(dir, args);
  ASSERT_EQ(last.status, 0) << last.output;

  const config::Recipe parsed = config::load_recipe_file(recipe);
  const auto a = testing::saved_weights(parsed, straight_dir + "/model.pt");
  const auto b = testing::saved_weights(parsed, killed_dir + "/model.pt");
  for (const auto& [key, tensor] : a) EXPECT_TRUE(tensor.equal(b.at(key))) << key;
  // The metrics read as one run: every step once, with the same losses.
  auto train_losses = [](const std::string& path) {
    std::vector<std::pair<int64_t, double>> out;
    for (const auto& r : read_metrics(path)) {
      if (r["type"] == "train") out.emplace_back(r["step"].get<int64_t>(), r["loss"].get<double>());
    }
    return out;
  };
  EXPECT_EQ(train_losses(straight_dir + "/metrics.jsonl"),
            train_losses(killed_dir + "/metrics.jsonl"));
}

}  // namespace
}  // namespace lowbit::train
