// The optimizers on CUDA parameters against the same run on the CPU: every
// optimizer, 8- and 32-bit, with percentile clipping and max_unorm in play,
// gives the CPU's parameters and states bit for bit (the kernels share the
// rules, the code search and the summation order); a checkpoint moves between
// devices and the resumed run stays bit-exact; the non-finite policies;
// parameters on two devices are refused. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <torch/torch.h>

#include "optim/optim.h"
#include "tests/optim/optim_test_util.h"
#include "tests/support/cuda.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using testing::cuda_device;

// Every parameter and state tensor of `a` equals `b`'s, bit for bit.
void expect_same(const std::vector<torch::Tensor>& a, optim::Optimizer8bit& opt_a,
                 const std::vector<torch::Tensor>& b, optim::Optimizer8bit& opt_b,
                 const std::string& label) {
  opt_a.sync_state();
  opt_b.sync_state();
  const auto same = [](const torch::Tensor& x, const torch::Tensor& y) {
    if (x.defined() != y.defined()) return false;
    return !x.defined() || torch::equal(x.cpu(), y.cpu());
  };
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(same(a[i].detach(), b[i].detach())) << label << ": parameter " << i;
    const auto& sa = testing::state_of(opt_a, a[i]);
    const auto& sb = testing::state_of(opt_b, b[i]);
    EXPECT_EQ(sa.step(), sb.step()) << label << ": step of parameter " << i;
    EXPECT_TRUE(same(sa.state1(), sb.state1())) << label << ": state1 of parameter " << i;
    EXPECT_TRUE(same(sa.state2(), sb.state2())) << label << ": state2 of parameter " << i;
    EXPECT_TRUE(same(sa.absmax1(), sb.absmax1())) << label << ": absmax1 of parameter " << i;
    EXPECT_TRUE(same(sa.absmax2(), sb.absmax2())) << label << ": absmax2 of parameter " << i;
    EXPECT_TRUE(same(sa.gnorm_vec(), sb.gnorm_vec())) << label << ": gnorm_vec of parameter " << i;
  }
}

TEST(CudaOptimizers, TrajectoriesMatchTheCpuBitForBit) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  for (testing::Kind kind : testing::all_kinds())
    for (int64_t bits : {8, 32})
      for (bool limits : {false, true}) {
        testing::Setup s;
        s.optim_bits = bits;
        if (limits) {  // the norm and gradient sums decide the step too
          s.percentile_clipping = 50;
          s.max_unorm = 0.5;
        }
        const std::string label = testing::kind_name(kind) + " " + std::to_string(bits) +
                                  "-bit" + (limits ? " clipped" : "");
        auto on_cpu = testing::make_params(5);
        auto on_gpu = testing::clone_params(on_cpu, cuda_device());
        auto cpu_opt = testing::make_optimizer(kind, on_cpu, s);
        auto gpu_opt = testing::make_optimizer(kind, on_gpu, s);
        EXPECT_EQ(gpu_opt->backend().name(), "cuda:0") << label;
        for (int t = 0; t < 20; ++t) {
          testing::set_grads(on_cpu, 5, t);
          testing::set_grads(on_gpu, 5, t);
          cpu_opt->step();
          gpu_opt->step();
        }
        expect_same(on_gpu, *gpu_opt, on_cpu, *cpu_opt, label);
      }
}

TEST(CudaOptimizers, CheckpointsMoveBetweenDevicesBitExactly) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  for (testing::Kind kind : testing::all_kinds())
    for (bool to_cpu : {true, false}) {
      const torch::Device from = to_cpu ? cuda_device() : torch::Device(torch::kCPU);
      const torch::Device to = to_cpu ? torch::Device(torch::kCPU) : cuda_device();
      const std::string label = testing::kind_name(kind) + (to_cpu ? " cuda->cpu" : " cpu->cuda");
      testing::Setup s;
      s.percentile_clipping = 50;
      auto first = testing::clone_params(testing::make_params(7), from);
      auto opt = testing::make_optimizer(kind, first, s);
      for (int t = 0; t < 5; ++t) {
        testing::set_grads(first, 7, t);
        opt->step();
      }
      const std::string saved = testing::save_to_string(*opt);
      auto resumed = testing::clone_params(first, to);
      auto opt_resumed = testing::make_optimizer(kind, resumed, s);
      testing::load_from_string(*opt_resumed, saved);
      for (int t = 5; t < 10; ++t) {
        testing::set_grads(first, 7, t);
        testing::set_grads(resumed, 7, t);
        opt->step();
        opt_resumed->step();
      }
      expect_same(resumed, *opt_resumed, first, *opt, label);
      // The states live where the parameters do.
      EXPECT_EQ(testing::state_of(*opt_resumed, resumed[2]).state1().device(), to) << label;
    }
}

TEST(CudaOptimizers, NonFinitePoliciesDecideOnTheDevice) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  auto params = testing::clone_params(testing::make_params(3), cuda_device());
  optim::AdamW8bit opt(params, optim::AdamW8bitOptions(1e-2));
  testing::set_grads(params, 3, 0);
  opt.step();
  const auto before = testing::clone_params(params);
  testing::set_grads(params, 3, 1);
  params[2].mutable_grad()[17] = std::numeric_limits<float>::quiet_NaN();
  opt.step();  // SkipStep: nothing changes, the step is counted
  EXPECT_EQ(opt.nonfinite_stats().skipped_steps, 1);
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_TRUE(torch::equal(params[i].detach().cpu(), before[i].detach())) << "parameter " << i;
  opt.sync_state();
  EXPECT_EQ(testing::state_of(opt, params[0]).step(), 1);
  opt.set_nonfinite_policy(optim::NonFinitePolicy::Raise);
  testing::expect_error([&] { opt.step(); }, "parameter 2 of group 0");
}

TEST(CudaOptimizers, ParametersOnTwoDevicesAreRefused) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  auto cpu = torch::randn({8}).set_requires_grad(true);
  auto gpu = torch::randn({8}, cuda_device()).set_requires_grad(true);
  testing::expect_error([&] { optim::AdamW8bit opt({cpu, gpu}); },
                        "one optimizer updates parameters of one device");
  // Built for CPU parameters that later moved: a clear error, not a crash.
  auto p = torch::randn({8}).set_requires_grad(true);
  optim::Lion8bit opt({p});
  {
    torch::NoGradGuard no_grad;
    p.set_data(p.to(cuda_device()));
  }
  p.mutable_grad() = torch::ones({8}, cuda_device());
  testing::expect_error([&] { opt.step(); }, "build the optimizer after moving the model");
}

}  // namespace
}  // namespace lowbit
