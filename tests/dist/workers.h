// Real worker processes on localhost for the dist tests: spawning lowbit_dist_worker
// (tests/dist/dp_worker.cpp) as the ranks of a run, and reading back what they wrote.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace lowbit::dist::testing {

struct Exit {
  int status = -1;  // exit code, or -1 when killed or timed out
  double seconds = 0;
  std::string err;  // stderr
};

// Runs `world` workers (none of RANK / WORLD_SIZE when world == 0: one plain process) with
// `args` and waits for all, killing any still running after `limit`.
std::vector<Exit> run_workers(int world, const std::vector<std::string>& args,
                              std::chrono::seconds limit = std::chrono::seconds(60));

// The tensors torch::save wrote to `path`; the file is removed.
std::vector<torch::Tensor> load(const std::string& path);
// The number a worker wrote to `path`.bytes; the file is removed.
int64_t load_bytes(const std::string& path);
// A path in the temp directory, unique to this test process.
std::string out_path(const std::string& name);
// Every worker exited with status 0 (a failure prints the rank's stderr).
void expect_clean(const std::vector<Exit>& exits);

// Expects runs `a` and `b` (their OUT paths) of 2 ranks to have written the same parameters,
// bit for bit, on each rank; their files are removed.
void expect_same_bits(const std::string& a, const std::string& b, const std::string& what);

// Trains 20 steps with the worker's optimizer `two` on 2 ranks and `one` in one process, the
// same batches, both with the worker settings `extra`, and returns each parameter's mean
// |2 ranks - 1 process| in units of the worker's learning rate (printed too). Expects both
// ranks to end with the same bits, which go to `two_params` when given.
std::vector<double> drift_from_one_process(const std::string& two, const std::string& one,
                                           std::vector<torch::Tensor>* two_params = nullptr,
                                           const std::vector<std::string>& extra = {});

}  // namespace lowbit::dist::testing
