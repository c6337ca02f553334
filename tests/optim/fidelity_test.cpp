// Fidelity of the optimizers' updates: 32-bit mode against torch::optim
// (Adam, AdamW, RMSprop) and against double-precision implementations of the
// papers' formulas written here (Lion, LAMB) over 100 steps; 8-bit mode
// against 32-bit mode with bitsandbytes' one-step error bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "optim/optim.h"
#include "tests/optim/optim_test_util.h"

namespace lowbit {
namespace {

using testing::Kind;

constexpr int kSteps = 100;
constexpr uint64_t kSeed = 42;

// Accumulated float rounding: the two implementations round differently
// (libtorch's vectorised kernels fuse multiply-adds; ours arrange Adam with
// one division as bitsandbytes does), so each step may move a parameter by an
// ulp or so differently (2^-23 relative). After 100 steps that random walk
// stays near 10 ulps, ~1e-6 of the largest parameter at most.
constexpr double kTorchTolerance = 1e-6;

template <typename TorchOptimizer, typename TorchOptions>
void expect_matches_torch(Kind kind, const testing::Setup& setup, TorchOptions torch_options,
                          const std::string& label) {
  auto params = testing::make_params(kSeed);
  auto reference = testing::clone_params(params);
  auto ours = testing::make_optimizer(kind, params, setup);
  TorchOptimizer theirs(reference, torch_options);
  for (int step = 0; step < kSteps; ++step) {
    testing::set_grads(params, kSeed, step);
    testing::set_grads(reference, kSeed, step);
    ours->step();
    theirs.step();
  }
  const double err = testing::max_relative_error(params, reference);
  EXPECT_LE(err, kTorchTolerance) << label;
  std::printf("%s 32-bit vs torch after %d steps: max |diff| / max |p| = %.3g\n", label.c_str(),
              kSteps, err);
  const auto start = testing::make_params(kSeed);
  EXPECT_GT(testing::max_relative_error(params, start), 1e-3) << label << ": the run must move";
}

TEST(Fidelity, Adam32bitMatchesTorchAdam) {
  testing::Setup s;
  s.optim_bits = 32;
  s.weight_decay = 0.1;  // torch Adam's L2 term
  expect_matches_torch<torch::optim::Adam>(
      Kind::Adam, s, torch::optim::AdamOptions(1e-3).weight_decay(0.1), "Adam");
}

TEST(Fidelity, AdamW32bitMatchesTorchAdamW) {
  testing::Setup s;
  s.optim_bits = 32;
  s.weight_decay = 0.1;
  s.lr = 1e-2;
  expect_matches_torch<torch::optim::AdamW>(
      Kind::AdamW, s, torch::optim::AdamWOptions(1e-2).weight_decay(0.1), "AdamW");
}

TEST(Fidelity, RMSprop32bitMatchesTorchRMSprop) {
  for (double momentum : {0.0, 0.9}) {
    testing::Setup s;
    s.optim_bits = 32;
    s.weight_decay = 0.01;
    s.momentum = momentum;
    s.lr = 1e-3;
    expect_matches_torch<torch::optim::RMSprop>(
        Kind::RMSprop, s, torch::optim::RMSpropOptions(1e-3).weight_decay(0.01).momentum(momentum),
        "RMSprop momentum " + std::to_string(momentum));
  }
}

// ---------------------------------------------------------------------------
// Lion and LAMB against their papers, in double precision.

struct DoubleState {
  torch::Tensor p, m, v;
};

std::vector<DoubleState> double_copy(const std::vector<torch::Tensor>& params) {
  std::vector<DoubleState> out;
  for (const auto& p : params) {
    auto d = p.detach().to(torch::kFloat64);
    out.push_back({d, torch::zeros_like(d), torch::zeros_like(d)});
  }
  return out;
}

// Lion, Chen et al. 2023, Algorithm 2 (decoupled weight decay). The decay
// factor 1 - lr * wd is the float32 number the optimizer multiplies by (as
// libtorch rounds its scalars): in double, its rounding error (up to 2^-24)
// would compound over the steps into a systematic drift of ~1e-6.
void lion_reference_step(std::vector<DoubleState>& st, const std::vector<torch::Tensor>& grads,
                         double lr, double beta1, double beta2, double wd) {
  const double decay = double(float(1 - lr * wd));
  for (size_t i = 0; i < st.size(); ++i) {
    const auto g = grads[i].to(torch::kFloat64);
    const auto c = beta1 * st[i].m + (1 - beta1) * g;
    st[i].p = st[i].p * decay - lr * torch::sign(c);
    st[i].m = beta2 * st[i].m + (1 - beta2) * g;
  }
}

// LAMB, You et al. 2019, Algorithm 2, with phi(x) = min(x, clamp).
void lamb_reference_step(std::vector<DoubleState>& st, const std::vector<torch::Tensor>& grads,
                         int t, double lr, double beta1, double beta2, double eps, double wd,
                         double clamp) {
  for (size_t i = 0; i < st.size(); ++i) {
    const auto g = grads[i].to(torch::kFloat64);
    st[i].m = beta1 * st[i].m + (1 - beta1) * g;
    st[i].v = beta2 * st[i].v + (1 - beta2) * g * g;
    const auto m_hat = st[i].m / (1 - std::pow(beta1, t));
    const auto v_hat = st[i].v / (1 - std::pow(beta2, t));
    const auto r = m_hat / (v_hat.sqrt() + eps) + wd * st[i].p;
    const double phi = std::min(st[i].p.norm().item<double>(), clamp);
    const double rn = r.norm().item<double>();
    const double trust = phi > 0 && rn > 0 ? phi / rn : 1.0;
    st[i].p = st[i].p - lr * trust * r;
  }
}

std::vector<torch::Tensor> grads_of(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> g;
  for (const auto& p : params) g.push_back(p.grad().clone());
  return g;
}

std::vector<torch::Tensor> params_of(const std::vector<DoubleState>& st) {
  std::vector<torch::Tensor> p;
  for (const auto& s : st) p.push_back(s.p);
  return p;
}

TEST(Fidelity, Lion32bitMatchesDoubleReference) {
  const double lr = 1e-4, wd = 0.1;
  testing::Setup s;
  s.optim_bits = 32;
  s.weight_decay = wd;
  auto params = testing::make_params(kSeed);
  auto reference = double_copy(params);
  auto ours = testing::make_optimizer(Kind::Lion, params, s);
  for (int step = 0; step < kSteps; ++step) {
    testing::set_grads(params, kSeed, step);
    lion_reference_step(reference, grads_of(params), lr, 0.9, 0.99, wd);
    ours->step();
  }
  // The float32 parameter is rounded twice per step (decay, then the step):
  // at most an ulp per step, so after 100 steps it can sit up to 100 * 2^-23
  // (relative) from the double reference, and no closer bound holds. The
  // exception is an element whose b1 m + (1 - b1) g is within rounding of 0,
  // where the sign (a 2 lr jump) can differ: bitsandbytes' own Lion test
  // allows such boundary elements; we allow 2 of the 5157.
  int64_t off = 0;
  double scale = 0;
  for (const auto& p : params_of(reference)) scale = std::max(scale, p.abs().max().item<double>());
  for (size_t i = 0; i < params.size(); ++i)
    off +=
        ((params[i].detach().to(torch::kFloat64) - reference[i].p).abs() > kSteps * 0x1p-23 * scale)
            .sum()
            .item<int64_t>();
  EXPECT_LE(off, 2);
  std::printf("Lion 32-bit vs double after %d steps: max |diff| / max |p| = %.3g\n", kSteps,
              testing::max_relative_error(params, params_of(reference)));
}

TEST(Fidelity, LAMB32bitMatchesDoubleReference) {
  const double lr = 1e-2, wd = 0.01;
  testing::Setup s;
  s.optim_bits = 32;
  s.weight_decay = wd;
  s.lr = lr;
  auto params = testing::make_params(kSeed);
  auto reference = double_copy(params);
  auto ours = testing::make_optimizer(Kind::LAMB, params, s);
  for (int step = 0; step < kSteps; ++step) {
    testing::set_grads(params, kSeed, step);
    lamb_reference_step(reference, grads_of(params), step + 1, lr, 0.9, 0.999, 1e-6, wd, 10.0);
    ours->step();
  }
  // Float states and float norm partial sums against double: the same
  // ulp-per-step walk as the torch comparisons.
  const double err = testing::max_relative_error(params, params_of(reference));
  EXPECT_LE(err, kTorchTolerance);
  std::printf("LAMB 32-bit vs double after %d steps: max |diff| / max |p| = %.3g\n", kSteps, err);
}

// ---------------------------------------------------------------------------
// 8-bit against 32-bit on the same run: p = 0.1 randn, g = 0.01 randn and
// default hyper-parameters as in bitsandbytes' tests/test_optim.py
// (test_optimizer8bit). After every step the 32-bit parameters are reset to
// the 8-bit ones, so each step's difference is measured alone, while the two
// runs keep their own states: the 8-bit states carry their accumulated
// quantization error, which is what is being measured. (bitsandbytes resets
// the states too; with a fused update one step from equal states is exact.)
// Bounds, per step:
// - mean |p8 - p32| < 0.06 lr: bitsandbytes' 6e-5 at its lr of 1e-3;
// - ||step8 - step32|| / ||step32|| < 0.05: blockwise 8-bit dynamic
//   quantization of Gaussian data has a mean relative error below 0.018
//   (bitsandbytes' functional tests); Adam's m / sqrt(v) carries one such error
//   and half of another, ~0.027, and 0.05 leaves twice that;
// - Lion's step is a sign: the fraction of elements whose sign differs stays
//   below 2% (flips need |b1 m + (1 - b1) g| under the states' quantization
//   error, ~2% of their scale).
TEST(Fidelity, EightBitStaysCloseToThirtyTwoBit) {
  for (Kind kind : testing::all_kinds()) {
    torch::manual_seed(7);
    torch::Tensor p8 = (torch::randn({256, 300}) * 0.1).set_requires_grad(true);
    torch::Tensor p32 = p8.detach().clone().set_requires_grad(true);
    testing::Setup s8, s32;
    s8.weight_decay = s32.weight_decay = kind == Kind::AdamW ? 1e-2 : 0.0;
    s8.momentum = s32.momentum = 0.0;  // bitsandbytes' RMSprop test case
    s32.optim_bits = 32;
    auto opt8 = testing::make_optimizer(kind, {p8}, s8);
    auto opt32 = testing::make_optimizer(kind, {p32}, s32);
    const double lr = opt8->param_groups()[0].options().get_lr();
    const std::string name = testing::kind_name(kind);
    double worst_abs = 0, worst_step = 0;
    for (int step = 0; step < 50; ++step) {
      const auto g = torch::randn({256, 300}) * 0.01;
      const auto before = p8.detach().clone();
      p8.mutable_grad() = g.clone();
      p32.mutable_grad() = g.clone();
      opt8->step();
      opt32->step();
      torch::NoGradGuard no_grad;
      const double mean_abs = (p32 - p8).abs().mean().item<double>();
      worst_abs = std::max(worst_abs, mean_abs);
      EXPECT_LT(mean_abs, 0.06 * lr) << name << " step " << step;
      if (kind == Kind::Lion) {
        const double flipped = ((p8 - p32).abs() > lr).to(torch::kFloat64).mean().item<double>();
        worst_step = std::max(worst_step, flipped);
        EXPECT_LT(flipped, 0.02) << name << " step " << step;
      } else {
        const double rel = ((p8 - p32).norm() / (p32 - before).norm()).item<double>();
        worst_step = std::max(worst_step, rel);
        EXPECT_LT(rel, 0.05) << name << " step " << step;
      }
      p32.copy_(p8);
    }
    std::printf("%s: worst mean |p8 - p32| = %.3g lr, worst %s %.3g\n", name.c_str(),
                worst_abs / lr, kind == Kind::Lion ? "flipped fraction" : "relative step error",
                worst_step);
  }
}

}  // namespace
}  // namespace lowbit
