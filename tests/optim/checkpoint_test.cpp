// save/load through torch::serialize: codes, absmax, step counts, clipping
// history and options round-trip exactly, training resumed from a checkpoint
// is bit-identical to training straight through (every optimizer, CPU and
// OpenCL), and a checkpoint that does not fit the optimizer is refused.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "optim/optim.h"
#include "tests/kernels/backends.h"
#include "tests/optim/optim_test_util.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using testing::Kind;
using testing::state_of;

constexpr uint64_t kSeed = 11;
constexpr int kTotal = 12;
constexpr int kSaveAt = 5;

// Percentile clipping (a gradient-norm history to restore) and max_unorm
// (the norm pass) on, so that every piece of state takes part.
testing::Setup resume_setup() {
  testing::Setup s;
  s.percentile_clipping = 50;
  s.max_unorm = 1.0;
  return s;
}

void expect_resume_is_bit_identical(Kind kind, std::shared_ptr<kernels::Backend> backend) {
  const std::string label = testing::kind_name(kind) + " on " + backend->name();
  const testing::Setup s = resume_setup();
  auto straight = testing::make_params(kSeed);
  auto straight_opt = testing::make_optimizer(kind, straight, s, backend);
  for (int t = 0; t < kTotal; ++t) {
    testing::set_grads(straight, kSeed, t);
    straight_opt->step();
  }

  auto first = testing::make_params(kSeed);
  auto first_opt = testing::make_optimizer(kind, first, s, backend);
  for (int t = 0; t < kSaveAt; ++t) {
    testing::set_grads(first, kSeed, t);
    first_opt->step();
  }
  const std::string checkpoint = testing::save_to_string(*first_opt);

  // A fresh process would load the model weights and then the optimizer.
  auto resumed = testing::clone_params(first);
  auto resumed_opt = testing::make_optimizer(kind, resumed, s, backend);
  testing::load_from_string(*resumed_opt, checkpoint);
  resumed_opt->sync_state();
  for (size_t i = 0; i < first.size(); ++i)
    EXPECT_TRUE(state_of(*resumed_opt, resumed[i]) == state_of(*first_opt, first[i]))
        << label << ": state of parameter " << i << " after load";
  for (int t = kSaveAt; t < kTotal; ++t) {
    testing::set_grads(resumed, kSeed, t);
    resumed_opt->step();
  }

  straight_opt->sync_state();
  resumed_opt->sync_state();
  for (size_t i = 0; i < straight.size(); ++i) {
    EXPECT_TRUE(torch::equal(straight[i], resumed[i])) << label << ": parameter " << i;
    EXPECT_TRUE(state_of(*straight_opt, straight[i]) == state_of(*resumed_opt, resumed[i]))
        << label << ": state of parameter " << i;
  }
  // The states really are 8-bit where they should be.
  EXPECT_TRUE(state_of(*straight_opt, straight[0]).quantized()) << label;
  EXPECT_FALSE(state_of(*straight_opt, straight[1]).quantized()) << label;
}

TEST(Checkpoint, ResumeIsBitIdenticalOnCpu) {
  const std::shared_ptr<kernels::Backend> cpu = kernels::make_backend({"cpu", -1, ""});
  for (Kind kind : testing::all_kinds()) expect_resume_is_bit_identical(kind, cpu);
}

TEST(Checkpoint, ResumeIsBitIdenticalOnOpenCl) {
  LOWBIT_REQUIRE_OPENCL(ocl);
  for (Kind kind : testing::all_kinds()) expect_resume_is_bit_identical(kind, ocl);
}

TEST(Checkpoint, LoadRestoresGroupOptionsAndCounters) {
  auto params = testing::make_params(kSeed);
  optim::AdamW8bit saved(params, optim::AdamW8bitOptions(3e-3).weight_decay(0.05).max_unorm(2.0));
  saved.set_nonfinite_policy(optim::NonFinitePolicy::SkipStep);
  testing::set_grads(params, kSeed, 0);
  params[0].mutable_grad()[0][0] = NAN;
  saved.step();  // skipped
  testing::set_grads(params, kSeed, 1);
  saved.step();
  ASSERT_EQ(saved.nonfinite_stats().skipped_steps, 1);

  optim::AdamW8bit loaded(testing::clone_params(params), optim::AdamW8bitOptions(1e-1));
  testing::load_from_string(loaded, testing::save_to_string(saved));
  const auto& o = static_cast<const optim::AdamW8bitOptions&>(loaded.param_groups()[0].options());
  EXPECT_TRUE(o == static_cast<const optim::AdamW8bitOptions&>(saved.param_groups()[0].options()));
  EXPECT_EQ(o.lr(), 3e-3);
  EXPECT_EQ(o.max_unorm(), 2.0);
  EXPECT_EQ(loaded.nonfinite_stats().skipped_steps, 1);
}

TEST(Checkpoint, MismatchedCheckpointIsRefused) {
  auto params = testing::make_params(kSeed);
  optim::AdamW8bit eight(params);
  testing::set_grads(params, kSeed, 0);
  eight.step();
  const std::string checkpoint = testing::save_to_string(eight);
  const auto expect_refused = [&](optim::Optimizer8bit& opt, const std::string& needle) {
    testing::expect_error_all<c10::Error>([&] { testing::load_from_string(opt, checkpoint); },
                                          {"parameter 0 of group 0", needle});
  };

  // Loading restores the saved options, but not per-parameter overrides: here
  // the first parameter is asked to keep 32-bit states.
  auto same = testing::clone_params(params);
  optim::AdamW8bit overridden(same);
  overridden.override_config(same[0], optim::ParamOverride{32, {}, {}});
  expect_refused(overridden, "32-bit");

  // Parameters of another size.
  std::vector<torch::Tensor> other = testing::clone_params(params);
  other[0] = torch::zeros({64, 81}).set_requires_grad(true);
  optim::AdamW8bit resized(other);
  expect_refused(resized, "expected 5184");
}

}  // namespace
}  // namespace lowbit
