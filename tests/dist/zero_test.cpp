// ZeRO-1 (dist::ZeroOptimizer) with real worker processes on localhost: sharded states against
// whole ones, global norms against one process, and checkpoints across numbers of ranks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "dist/process_group.h"
#include "optim/optim.h"
#include "tests/dist/workers.h"
#include "tests/support/cuda.h"

namespace {

namespace fs = std::filesystem;
using namespace lowbit::dist::testing;

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The worker's parameter shapes (hidden width 128).
std::vector<torch::Tensor> worker_shapes() {
  return {torch::zeros({128, 64}), torch::zeros({128}), torch::zeros({10, 128}),
          torch::zeros({10})};
}

// The states of an optimizer state dict file as the single-process LAMB8bit reads it.
std::vector<lowbit::optim::QuantizedParamState> lamb_states(const std::string& path) {
  lowbit::optim::LAMB8bit reader(worker_shapes(), lowbit::optim::LAMB8bitOptions(1e-2));
  torch::load(reader, path);
  std::vector<lowbit::optim::QuantizedParamState> states;
  for (size_t k = 0; k < 4; ++k) {
    const auto* s = reader.param_state(0, k);
    EXPECT_NE(s, nullptr) << path << ": parameter " << k << " has no state";
    if (s) states.push_back(*s);
  }
  return states;
}

// The same step counts, codes, absmax, float states and gradient-norm histories.
void expect_same_states(const std::string& got, const std::string& want) {
  const auto a = lamb_states(got), b = lamb_states(want);
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_TRUE(a[k] == b[k]) << got << " and " << want << " differ in parameter " << k;
    EXPECT_TRUE(a[k].gnorm_vec().defined()) << "parameter " << k << " keeps no history";
  }
}

TEST(Zero1, ShardedStatesGiveTheDataParallelBitsInHalfTheStateMemoryPerRank) {
  const std::string dp = out_path("zero_dp"), zero = out_path("zero_sharded");
  expect_clean(run_workers(2, {dp, "adamw8bit", "20"}));
  expect_clean(run_workers(2, {zero, "zero-adamw8bit", "20"}));
  int64_t sharded_total = 0, largest = 0, whole = 0;
  for (int r = 0; r < 2; ++r) {
    const std::string suffix = "." + std::to_string(r);
    const auto pd = load(dp + suffix), pz = load(zero + suffix);
    // The same averaged gradients, the same blocks, the same codes: the same bits.
    for (size_t k = 0; k < pd.size(); ++k)
      EXPECT_TRUE(torch::equal(pd[k], pz[k])) << "rank " << r << " parameter " << k;
    whole = load_bytes(dp + suffix);
    const int64_t mine = load_bytes(zero + suffix);
    sharded_total += mine;
    largest = std::max(largest, mine);
  }
  std::cout << "state bytes: whole " << whole << ", ZeRO-1 ranks " << sharded_total - largest
            << " + " << largest << "\n";
  // The ranks split the blocks by state bytes (their codes and absmax sum to the whole);
  // each shard adds only its own small per-tensor extras (step counts).
  EXPECT_NEAR(double(sharded_total), double(whole), 0.02 * double(whole));
  EXPECT_LE(double(largest), 0.55 * double(whole));
}

// Mean |a - b| over the parameters of two one-process runs, in lr, per parameter.
std::vector<double> one_process_difference(const std::string& a, const std::string& b) {
  const std::string pa = out_path("diff_" + a), pb = out_path("diff_" + b);
  expect_clean(run_workers(0, {pa, a, "20"}));
  expect_clean(run_workers(0, {pb, b, "20"}));
  const auto ta = load(pa + ".0"), tb = load(pb + ".0");
  load_bytes(pa + ".0");
  load_bytes(pb + ".0");
  std::vector<double> d;
  for (size_t k = 0; k < ta.size(); ++k)
    d.push_back((ta[k] - tb[k]).abs().mean().item<double>() / 1e-2);
  return d;
}

// The worker's first weight (128 x 64, 32 blocks of 256) is the one tensor cut in two: rank 0
// owns its first 28 blocks, rank 1 the rest and the other tensors. Its norms are where
// per-shard sums would differ from the whole tensor's.
void matches_one_process(const std::string& optimizer) {
  std::vector<torch::Tensor> zero;
  const auto drifts = drift_from_one_process("zero-" + optimizer, optimizer, &zero);
  ASSERT_EQ(drifts.size(), 4u);
  // The tolerance of data parallelism against one process (data_parallel_test.cpp: 1e-3 lr
  // over 20 steps, from gradients that differ by float rounding), as the states are the same
  // blocks. Norms of the shards instead (a trust ratio, clip or cap per half tensor) moved
  // the first weight by 1.7e-3 lr (max_unorm) to 7e-2 lr (clipping) when this was written.
  // Clipping at the 5th percentile rescales every step by a ratio of gradient norms, which
  // passes the rounding differences of the one-process and two-rank gradients on to every
  // value, some across a code boundary of the 8-bit states: adamw8bit-clip drifted 4.6e-6 lr
  // on the 2-core VM, 2.2e-4 on the GPU machine's idle 16-core host (the same in three runs,
  // libtorch 2.11's threaded matmuls) and 3.2e-3 there under a full parallel ctest. Its
  // bound, 1e-2, stays 7x below the per-shard clipping's drift.
  const double bound = optimizer.find("clip") != std::string::npos ? 1e-2 : 1e-3;
  for (size_t k = 0; k < drifts.size(); ++k)
    EXPECT_LE(drifts[k], bound) << optimizer << " parameter " << k;
  // Against data parallelism with whole states, the same averaged gradients: the global norms
  // add two double partial sums where whole states add the blocks' sums in one order, ~1e-16
  // relative, which the float scale of a step rounds away but for a ~1e-9 chance per step.
  // The batches are fixed, so this holds run after run: the same bits.
  const std::string dp = out_path("dp_" + optimizer);
  expect_clean(run_workers(2, {dp, optimizer, "20"}));
  for (int r = 0; r < 2; ++r) {
    const auto whole = load(dp + "." + std::to_string(r));
    load_bytes(dp + "." + std::to_string(r));
    ASSERT_EQ(whole.size(), zero.size());
    for (size_t k = 0; k < whole.size(); ++k)
      EXPECT_TRUE(torch::equal(whole[k], zero[k])) << optimizer << " rank " << r << " parameter "
                                                   << k;
  }
}

TEST(Zero1, LambMatchesOneProcessThroughGlobalTrustRatios) { matches_one_process("lamb8bit"); }

TEST(Zero1, PercentileClippingAndMaxUnormMatchOneProcessThroughGlobalNorms) {
  for (const std::string optimizer : {"adamw8bit-clip", "adamw8bit-unorm", "lamb8bit-clip-unorm"})
    matches_one_process(optimizer);
  // The options act in these runs: each moves the first weight far beyond that tolerance, so
  // the comparisons above would see norms that went wrong.
  const std::vector<std::pair<std::string, std::string>> options{
      {"adamw8bit-clip", "adamw8bit"}, {"adamw8bit-unorm", "adamw8bit"}};
  for (const auto& [with, without] : options) {
    const auto d = one_process_difference(with, without);
    std::cout << with << " vs " << without << ": mean difference of the first weight " << d[0]
              << " lr\n";
    EXPECT_GE(d[0], 1e-2) << with;
  }
}

TEST(Zero1, ResumesOnTheSameRanksBitExactly) {
  const std::string whole = out_path("resume_whole"), half = out_path("resume_half"),
                    rest = out_path("resume_rest");
  const std::string optimizer = "zero-lamb8bit-clip";
  expect_clean(run_workers(2, {whole, optimizer, "20"}));
  expect_clean(run_workers(2, {half, optimizer, "10", "save=1"}));
  expect_clean(run_workers(2, {rest, optimizer, "20", "resume=" + half, "from=10"}));
  // One state dict, read by the single-process optimizer, with the saved codes.
  expect_same_states(rest + ".reloaded", half + ".ckpt");
  expect_same_bits(whole, rest, "20 steps against 10 + 10 resumed");
  for (int r = 0; r < 2; ++r) {  // the first half's parameters: not compared
    load(half + "." + std::to_string(r));
    load_bytes(half + "." + std::to_string(r));
  }
  for (const auto& f : {half + ".ckpt", half + ".params", rest + ".reloaded"}) fs::remove(f);
}

// Resumes `to` (ranks: 0 = one process) on `to_device` from a checkpoint that `from` ranks
// wrote on `from_device` after 10 of 20 steps: the states it loads are the saved ones, code for
// code, and it ends where an uninterrupted run on `from` ranks does, within data parallelism's
// tolerance.
void resumes_across(int from, int to, const std::string& from_device = "cpu",
                    const std::string& to_device = "cpu") {
  const auto name = [](int ranks) {
    return std::string(ranks == 2 ? "zero-" : "") + "lamb8bit-clip";
  };
  const std::string tag =
      std::to_string(from) + from_device + "to" + std::to_string(to) + to_device;
  const std::string whole = out_path("across_whole" + tag), half = out_path("across_half" + tag),
                    rest = out_path("across_rest" + tag);
  const std::string on_from = "device=" + from_device, on_to = "device=" + to_device;
  expect_clean(run_workers(from, {whole, name(from), "20", on_from}));
  expect_clean(run_workers(from, {half, name(from), "10", "save=1", on_from}));
  expect_clean(run_workers(to, {rest, name(to), "20", "resume=" + half, "from=10", on_to}));
  expect_same_states(rest + ".reloaded", half + ".ckpt");
  const auto want = load(whole + ".0"), got = load(rest + ".0");
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    // Steps 11-20 average the gradients over another number of ranks (or on another device,
    // whose matmuls round otherwise): the data-parallel tolerance (1e-3 lr over 20 steps,
    // data_parallel_test.cpp, for gradients that differ by float rounding) covers these 10.
    const double drift = (got[k] - want[k]).abs().mean().item<double>() / 1e-2;
    std::cout << tag << " parameter " << k << ": mean |resumed - uninterrupted| = " << drift
              << " lr\n";
    EXPECT_LE(drift, 1e-3) << tag << " parameter " << k;
  }
  if (to == 2) {
    EXPECT_TRUE(torch::equal(load(rest + ".1")[0], got[0]));
  }
  for (int r = 0; r < std::max(from, 1); ++r) {
    const std::string suffix = "." + std::to_string(r);
    if (r > 0) load(whole + suffix);
    load(half + suffix);
    load_bytes(whole + suffix);
    load_bytes(half + suffix);
  }
  for (int r = 0; r < std::max(to, 1); ++r) load_bytes(rest + "." + std::to_string(r));
  for (const auto& f : {half + ".ckpt", half + ".params", rest + ".reloaded"}) fs::remove(f);
}

TEST(Zero1, ResumesFromTwoRanksOnOneProcessAndBack) {
  resumes_across(2, 0);
  resumes_across(0, 2);
}

// Issue 20: ranks whose parameters and sharded states live on a GPU (two ranks share the one
// GPU of a test machine, so Gloo carries their CUDA tensors).
TEST(Zero1Cuda, ShardedStatesOnTheGpuGiveTheDataParallelBits) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  const std::string dp = out_path("cuda_dp"), zero = out_path("cuda_zero");
  expect_clean(run_workers(2, {dp, "adamw8bit", "20", "device=cuda"}));
  expect_clean(run_workers(2, {zero, "zero-adamw8bit", "20", "device=cuda"}));
  expect_same_bits(dp, zero, "ZeRO-1 on cuda");
}

TEST(Zero1Cuda, ACheckpointOfGpuRanksResumesOnTheCpuAndBack) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  resumes_across(2, 0, "cuda", "cpu");
  resumes_across(0, 2, "cpu", "cuda");
}

// NCCL carries the CUDA tensors of a group of one (NCCL refuses two ranks on one GPU): its
// all-reduces and broadcasts must leave every bit as a plain process has it.
TEST(Zero1Cuda, NcclGivesAGroupOfOneThePlainProcessBits) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  if (!lowbit::dist::nccl_available()) {
    const char* req = std::getenv("LOWBIT_REQUIRE_CUDA");
    if (req && std::string(req) == "1") FAIL() << "LOWBIT_REQUIRE_CUDA=1 but no NCCL in this build";
    GTEST_SKIP() << "this build has no NCCL";
  }
  const std::string plain = out_path("nccl_plain"), dp = out_path("nccl_dp"),
                    zero = out_path("nccl_zero");
  expect_clean(run_workers(0, {plain, "lamb8bit-clip", "20", "device=cuda"}));
  expect_clean(run_workers(1, {dp, "lamb8bit-clip", "20", "device=cuda", "nccl=1"}));
  expect_clean(run_workers(1, {zero, "zero-lamb8bit-clip", "20", "device=cuda", "nccl=1"}));
  const auto want = load(plain + ".0");
  for (const auto& run : {dp, zero}) {
    const auto got = load(run + ".0");
    load_bytes(run + ".0");
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < want.size(); ++k)
      EXPECT_TRUE(torch::equal(got[k], want[k])) << run << " parameter " << k;
  }
  load_bytes(plain + ".0");
}

TEST(Zero1, RefusesTheCheckpointOfAnotherModelOrOptimizerOnEveryRank) {
  const std::string half = out_path("refuse_half"), out = out_path("refuse_out");
  expect_clean(run_workers(2, {half, "zero-lamb8bit-clip", "3", "save=1"}));
  const auto refused = [&](const std::vector<std::string>& args, const std::string& needle) {
    const auto exits = run_workers(2, args);
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(exits[r].status, 1) << "rank " << r << ": " << exits[r].err;
      EXPECT_NE(exits[r].err.find(needle), std::string::npos) << "rank " << r << ": "
                                                              << exits[r].err;
    }
  };
  refused({out, "zero-adamw8bit-clip", "6", "resume=" + half, "from=3"},
          "saved by another optimizer");
  refused({out, "zero-lamb8bit-clip", "6", "resume=" + half, "from=3", "hidden=160"},
          "state1 has 8192 elements; expected 10240");
  refused({out, "zero-lamb8bit", "6", "resume=" + half, "from=3"}, "percentile_clipping 5");
  for (int r = 0; r < 2; ++r) {
    load(half + "." + std::to_string(r));
    load_bytes(half + "." + std::to_string(r));
  }
  for (const auto& f : {half + ".ckpt", half + ".params"}) fs::remove(f);
}

TEST(Zero1, AFailedSaveLeavesThePreviousCheckpointAndStopsEveryRank) {
  const std::string dir = out_path("failed_save");
  fs::create_directories(dir);
  const std::string out = dir + "/run";
  expect_clean(run_workers(2, {out, "zero-lamb8bit-clip", "3", "save=1"}));
  const std::string before = file_bytes(out + ".ckpt");
  ASSERT_GT(before.size(), 4096u);
  const auto exits = run_workers(2, {out, "zero-lamb8bit-clip", "6", "save=1", "fsize=4096"});
  EXPECT_EQ(exits[0].status, 1) << exits[0].err;
  EXPECT_NE(exits[0].err.find(out + ".ckpt"), std::string::npos) << exits[0].err;
  EXPECT_EQ(exits[1].status, 1) << exits[1].err;
  EXPECT_NE(exits[1].err.find("failed on rank(s) 0"), std::string::npos) << exits[1].err;
  EXPECT_EQ(file_bytes(out + ".ckpt"), before);
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos)
        << "left behind: " << entry.path();
  fs::remove_all(dir);
}

TEST(Zero1, RanksThatBuildDifferentOptimizersAreRefusedOnEveryRank) {
  const auto exits = run_workers(2, {out_path("zero_recipe"), "zero-adamw8bit", "2",
                                     "other-recipe"});
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(exits[r].status, 1) << "rank " << r;
    EXPECT_NE(exits[r].err.find("built different optimizers"), std::string::npos)
        << exits[r].err;
  }
}

}  // namespace
