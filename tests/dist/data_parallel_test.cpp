// Data-parallel training over Gloo (issue 19): real processes of lowbit_dist_worker on localhost,
// against one process with the whole batch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "dist/process_group.h"
#include "tests/dist/workers.h"

namespace {

using lowbit::dist::Env;
using namespace lowbit::dist::testing;

TEST(DataParallel, TwoRanksAverageToTheWholeBatchGradient) {
  const std::string one = out_path("dp_grads1"), two = out_path("dp_grads2");
  expect_clean(run_workers(0, {one, "adamw8bit", "1", "grads"}));
  expect_clean(run_workers(2, {two, "adamw8bit", "1", "grads"}));
  const auto g1 = load(one + ".0"), g2a = load(two + ".0"), g2b = load(two + ".1");
  ASSERT_EQ(g1.size(), g2a.size());
  for (size_t k = 0; k < g1.size(); ++k) {
    // Every rank ends with the same bits (one all-reduce result).
    EXPECT_TRUE(torch::equal(g2a[k], g2b[k])) << "parameter " << k;
    // The same mean over the same 32 rows, summed as two means of 16 and halved: the
    // difference is float rounding of sums of at most 32 terms, below 32 u = 2e-6 of the
    // largest gradient (u = 2^-24); 1e-5 leaves room without admitting a missing shard.
    const double scale = g1[k].abs().max().item<double>();
    EXPECT_LE((g2a[k] - g1[k]).abs().max().item<double>(), 1e-5 * scale) << "parameter " << k;
  }
}

void trains_like_one_process(const std::string& optimizer) {
  const auto drifts = drift_from_one_process(optimizer, optimizer);
  for (size_t k = 0; k < drifts.size(); ++k) {
    // The gradients differ from one process's by float rounding (~1e-7 relative, test above).
    // That moves a state's 8-bit code only where the state lies within that distance of a code
    // boundary (about 1e-7 / 1e-2 of the elements per step for the dynamic code's gaps), and
    // each such element's later steps change by at most ~2 lr each: over 20 steps a mean
    // drift of at most 1e-5 x 20 x 2 lr = 4e-4 lr (bound: 1e-3 lr; measured ~1e-7 lr, as
    // flips are rarer still). A rank training on the wrong rows, or on its own
    // gradient alone, moves every element by O(lr).
    EXPECT_LE(drifts[k], 1e-3) << optimizer << " parameter " << k;
  }
}

TEST(DataParallel, TwoRanksTrainLikeOneProcessWithTheWholeBatch) {
  trains_like_one_process("adamw8bit");
  trains_like_one_process("lamb8bit");
}

// OverlappedAverage against average_gradients on 2 ranks: the same local gradients, summed by
// an all-reduce of two (a + b, the same bits in any bucket layout) and halved: the same bits,
// unless the hooks miss a gradient, count one twice or lose an earlier micro-batch's sum. With
// accum=3 two backwards accumulate before the armed one; ZeRO-1 steps on the averages.
TEST(DataParallel, OverlappedAveragingGivesTheBlockingAveragesBits) {
  for (const auto& [optimizer, accum] : std::vector<std::pair<std::string, std::string>>{
           {"adamw8bit", "accum=1"}, {"adamw8bit", "accum=3"}, {"zero-lamb8bit", "accum=2"}}) {
    const std::string blocking = out_path("ov_blocking"), overlapped = out_path("ov_overlapped");
    expect_clean(run_workers(2, {blocking, optimizer, "20", accum}));
    expect_clean(run_workers(2, {overlapped, optimizer, "20", accum, "overlap=1"}));
    expect_same_bits(blocking, overlapped, optimizer + " " + accum);
  }
}

TEST(DataParallel, BroadcastParametersGivesEveryRankRankZerosInitialisation) {
  // Reference: one process initialised from rank 0's seed, no collective at all.
  const std::string one = out_path("bc1"), two = out_path("bc2");
  expect_clean(run_workers(0, {one, "adamw8bit", "0"}));
  expect_clean(run_workers(2, {two, "adamw8bit", "0", "broadcast"}));
  const auto want = load(one + ".0");
  load_bytes(one + ".0");
  for (int r = 0; r < 2; ++r) {
    const std::string path = two + "." + std::to_string(r);
    const auto got = load(path);
    load_bytes(path);
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < want.size(); ++k)
      EXPECT_TRUE(torch::equal(got[k], want[k])) << "rank " << r << " parameter " << k;
  }
}

TEST(DataParallel, ADeadPeerEndsTheRunWithAnErrorNotAHang) {
  const std::string out = out_path("dp_die");
  const auto exits = run_workers(2, {out, "adamw8bit", "5", "die"});
  EXPECT_EQ(exits[1].status, -1);  // killed itself
  EXPECT_EQ(exits[0].status, 1) << exits[0].err;
  EXPECT_LT(exits[0].seconds, 45.0);  // the group's timeout is 10 s
  EXPECT_NE(exits[0].err.find("lowbit::dist"), std::string::npos) << exits[0].err;
  EXPECT_EQ(exits[0].err.find("frame #"), std::string::npos) << "no libtorch backtrace";
}

TEST(DataParallel, RanksWithDifferentModelsAreRefusedOnEveryRank) {
  const std::string out = out_path("dp_other");
  const auto exits = run_workers(2, {out, "adamw8bit", "5", "other-model"});
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(exits[r].status, 1) << "rank " << r;
    EXPECT_NE(exits[r].err.find("models differ"), std::string::npos) << exits[r].err;
  }
}

// setenv / unsetenv for one test.
struct ScopedEnv {
  explicit ScopedEnv(std::vector<std::pair<std::string, const char*>> vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name.c_str());
      saved.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      if (value)
        setenv(name.c_str(), value, 1);
      else
        unsetenv(name.c_str());
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved) {
      if (value)
        setenv(name.c_str(), value->c_str(), 1);
      else
        unsetenv(name.c_str());
    }
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
};

void expect_env_error(std::vector<std::pair<std::string, const char*>> vars,
                      const std::string& needle) {
  ScopedEnv scoped(std::move(vars));
  try {
    (void)lowbit::dist::env_from_environment();
    ADD_FAILURE() << "accepted; expected an error containing '" << needle << "'";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(DistEnv, ReadsTorchrunsVariablesAndRefusesMalformedOnes) {
  {
    ScopedEnv none({{"RANK", nullptr}, {"WORLD_SIZE", nullptr}, {"MASTER_ADDR", nullptr},
                    {"MASTER_PORT", nullptr}, {"LOCAL_RANK", nullptr},
                    {"LOCAL_WORLD_SIZE", nullptr}});
    const Env env = lowbit::dist::env_from_environment();
    EXPECT_EQ(env.rank, 0);
    EXPECT_EQ(env.world_size, 1);
    EXPECT_EQ(env.local_rank, 0);
    EXPECT_EQ(env.local_world_size, 1);
  }
  {
    ScopedEnv set({{"RANK", "2"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "10.0.0.7"},
                   {"MASTER_PORT", "29999"}, {"LOCAL_RANK", nullptr},
                   {"LOCAL_WORLD_SIZE", nullptr}});
    const Env env = lowbit::dist::env_from_environment();
    EXPECT_EQ(env.rank, 2);
    EXPECT_EQ(env.world_size, 4);
    EXPECT_EQ(env.local_rank, 2);  // one machine
    EXPECT_EQ(env.local_world_size, 4);
    EXPECT_EQ(env.master_addr, "10.0.0.7");
    EXPECT_EQ(env.master_port, 29999);
  }
  {
    // Two machines of two ranks: rank 3 is the second process of the second machine.
    ScopedEnv set({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                   {"LOCAL_WORLD_SIZE", "2"}});
    const Env env = lowbit::dist::env_from_environment();
    EXPECT_EQ(env.local_rank, 1);
    EXPECT_EQ(env.local_world_size, 2);
  }
  expect_env_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"},
                    {"LOCAL_WORLD_SIZE", "2"}},
                   "LOCAL_RANK='2'");
  expect_env_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"},
                    {"LOCAL_WORLD_SIZE", nullptr}},
                   "only LOCAL_RANK is set");
  expect_env_error({{"RANK", "x"}, {"WORLD_SIZE", "2"}}, "RANK='x'");
  expect_env_error({{"RANK", "2"}, {"WORLD_SIZE", "2"}}, "RANK='2'");
  expect_env_error({{"RANK", "0"}, {"WORLD_SIZE", "0"}}, "WORLD_SIZE='0'");
  expect_env_error({{"RANK", "0"}, {"WORLD_SIZE", nullptr}}, "only RANK is set");
  expect_env_error({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_PORT", "70000"}},
                   "MASTER_PORT='70000'");
}

}  // namespace
