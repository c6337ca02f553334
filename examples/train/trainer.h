// The training loop of lowbit-train: builds the task, model (with the
// recipe's quant/lora preparation) and optimizer, resumes from the newest
// complete checkpoint, trains with warmup/decay, gradient accumulation and
// clipping, evaluates, checkpoints, logs metrics and writes the plot.
#pragma once

#include <csignal>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <ostream>
#include <vector>

#include "examples/config/recipe.h"
#include "examples/train/ranks.h"
#include "examples/train/task.h"

namespace lowbit::train {

struct RunOptions {
  std::ostream* out = &std::cout;
  bool terminal = false;  // log.progress auto draws a bar only on a terminal
  // Set (e.g. by a SIGINT handler) to stop after the current step with a
  // checkpoint.
  const volatile std::sig_atomic_t* stop = nullptr;
  // A rank of a multi-process run (data parallel): each takes its DataShard
  // of every micro-batch, the gradients are averaged before the update, and
  // rank 0 alone evaluates, logs and writes files (give the others a quiet
  // `out`). nullptr: one process.
  std::shared_ptr<Ranks> ranks;
};

struct RunResult {
  int64_t start_step = 0;  // the checkpoint's step when resumed, else 0
  int64_t end_step = 0;
  int64_t total_steps = 0;
  bool interrupted = false;
  std::optional<Evaluation> final_evaluation;  // of end_step, when it finished the run
  double mean_step_seconds = 0.0;              // forward + backward + update, this process
  double mean_update_seconds = 0.0;            // optimizer.step() alone
  double mean_step_cpu_seconds = 0.0;    // the same in process CPU time
  double mean_update_cpu_seconds = 0.0;
  int64_t optimizer_state_bytes = 0;
  double peak_rss_mib = 0.0;  // this process's high-water mark
  // CUDA runs: the most memory libtorch's allocator held for tensors on the run's GPU.
  double peak_gpu_mib = 0.0;
  // Multi-process runs: every rank's peak RSS, peak GPU memory and optimizer state bytes.
  std::vector<double> rank_peak_rss_mib;
  std::vector<double> rank_peak_gpu_mib;
  std::vector<int64_t> rank_optimizer_state_bytes;
};

RunResult run_training(const config::Recipe& recipe, const RunOptions& options = {});

}  // namespace lowbit::train
