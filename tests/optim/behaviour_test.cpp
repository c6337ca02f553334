// What users of torch::optim rely on, on the 8-bit optimizers: state memory,
// state precision per tensor and per parameter, param groups, closures,
// percentile clipping and max_unorm against references written here, the
// non-finite gradient policies, and clear errors for unsupported input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "optim/optim.h"
#include "tests/optim/optim_test_util.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using testing::Kind;

using testing::state_of;

torch::Tensor param(std::vector<int64_t> shape, uint64_t seed = 0) {
  torch::manual_seed(seed);
  return (torch::randn(shape) * 0.1).set_requires_grad(true);
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  testing::expect_error_all<c10::Error>(fn, needles);
}

// ---------------------------------------------------------------------------
// Memory and precision.

TEST(Behaviour, StateBytesPerParameter) {
  const int64_t n = 1 << 20;
  const double absmax = 4.0 / 256;  // one float32 per 256-element block
  struct Expect {
    Kind kind;
    double momentum;
    double bytes_per_param;
  };
  // Two 8-bit states + two absmax arrays: 2.03125 bytes/param (<= 2.04); one
  // state (Lion, RMSprop without momentum): 1.015625.
  for (const Expect& e :
       {Expect{Kind::Adam, 0, 2 + 2 * absmax}, Expect{Kind::AdamW, 0, 2 + 2 * absmax},
        Expect{Kind::LAMB, 0, 2 + 2 * absmax}, Expect{Kind::Lion, 0, 1 + absmax},
        Expect{Kind::RMSprop, 0, 1 + absmax}, Expect{Kind::RMSprop, 0.9, 2 + 2 * absmax}}) {
    auto big = param({n});
    auto bias = param({100});
    testing::Setup s;
    s.momentum = e.momentum;
    auto opt = testing::make_optimizer(e.kind, {big, bias}, s);
    EXPECT_EQ(opt->state_bytes(), 0);
    big.mutable_grad() = torch::ones({n});
    bias.mutable_grad() = torch::ones({100});
    opt->step();
    const std::string label =
        testing::kind_name(e.kind) + " momentum " + std::to_string(e.momentum);
    EXPECT_DOUBLE_EQ(double(opt->state_bytes(big)) / n, e.bytes_per_param) << label;
    // Below min_8bit_size: float32 states, 4 bytes per state per element.
    const int states = e.bytes_per_param > 2 ? 2 : 1;
    EXPECT_EQ(opt->state_bytes(bias), 100 * 4 * states) << label;
    EXPECT_EQ(opt->state_bytes(), opt->state_bytes(big) + opt->state_bytes(bias)) << label;
  }
  // 32-bit mode: 8 bytes/param for Adam, as torch::optim::AdamW.
  auto big = param({n});
  optim::AdamW8bit fp32({big}, optim::AdamW8bitOptions().optim_bits(32));
  big.mutable_grad() = torch::ones({n});
  fp32.step();
  EXPECT_EQ(fp32.state_bytes(big), 8 * n);
}

TEST(Behaviour, MinEightBitSizeAndOverrideChooseThePrecision) {
  auto below = param({4095});
  auto at = param({4096});
  auto embedding = param({1000, 16});
  optim::Adam8bit opt({below, at, embedding});
  // bitsandbytes' GlobalOptimManager use case: keep the embedding at 32 bits.
  opt.override_config(embedding, optim::ParamOverride{32, {}, {}});
  for (auto* p : {&below, &at, &embedding}) p->mutable_grad() = torch::ones_like(*p);
  opt.step();
  EXPECT_FALSE(state_of(opt, below).quantized());
  EXPECT_TRUE(state_of(opt, at).quantized());
  EXPECT_EQ(state_of(opt, at).state1().scalar_type(), torch::kUInt8);
  EXPECT_EQ(state_of(opt, at).absmax1().numel(), 16);
  EXPECT_FALSE(state_of(opt, embedding).quantized());
  expect_error(
      [&] {
        opt.override_config(at, optim::ParamOverride{32, {}, {}});
      },
      {"already exists", "before the parameter's first step"});
  expect_error(
      [&] {
        opt.override_config(param({10}), optim::ParamOverride{{}, 100, {}});
      },
      {"block_size is 100"});
}

// ---------------------------------------------------------------------------
// torch::optim behaviour.

TEST(Behaviour, ParamGroupsUseTheirOwnOptions) {
  // Two groups with their own learning rate and weight decay, in 32-bit mode,
  // against torch::optim::Adam with the same groups (tolerance as in
  // fidelity_test: accumulated float rounding).
  auto a = param({300}, 1), b = param({40, 5}, 2);
  auto ra = a.detach().clone().set_requires_grad(true);
  auto rb = b.detach().clone().set_requires_grad(true);
  std::vector<torch::optim::OptimizerParamGroup> ours_groups, torch_groups;
  ours_groups.emplace_back(std::vector<torch::Tensor>{a},
                           std::make_unique<optim::Adam8bitOptions>(
                               optim::Adam8bitOptions(1e-2).weight_decay(0.1).optim_bits(32)));
  ours_groups.emplace_back(std::vector<torch::Tensor>{b});
  torch_groups.emplace_back(std::vector<torch::Tensor>{ra},
                            std::make_unique<torch::optim::AdamOptions>(
                                torch::optim::AdamOptions(1e-2).weight_decay(0.1)));
  torch_groups.emplace_back(std::vector<torch::Tensor>{rb});
  optim::Adam8bit ours(ours_groups, optim::Adam8bitOptions(1e-3).optim_bits(32));
  torch::optim::Adam theirs(torch_groups, torch::optim::AdamOptions(1e-3));
  for (int t = 0; t < 30; ++t) {
    testing::set_grads({a, b}, 3, t);
    testing::set_grads({ra, rb}, 3, t);
    ours.step();
    theirs.step();
  }
  EXPECT_LE(testing::max_relative_error({a}, {ra}), 1e-6);
  EXPECT_LE(testing::max_relative_error({b}, {rb}), 1e-6);
}

TEST(Behaviour, StepRunsTheClosureWithGradientsEnabled) {
  auto w = param({8, 4});
  const auto x = torch::randn({16, 8});
  optim::AdamW8bit opt({w});
  const auto before = w.detach().clone();
  torch::Tensor seen;
  const auto loss = opt.step([&] {
    opt.zero_grad();
    auto l = x.mm(w).pow(2).mean();
    l.backward();
    seen = l.detach();
    return l;
  });
  EXPECT_TRUE(torch::equal(loss.detach(), seen));
  EXPECT_FALSE(torch::equal(w.detach(), before));
}

TEST(Behaviour, ParametersWithoutGradientAreLeftAlone) {
  auto used = param({10}), unused = param({10}, 1);
  const auto unused_before = unused.detach().clone();
  optim::Lion8bit opt({used, unused});
  used.mutable_grad() = torch::ones({10});
  opt.step();
  EXPECT_TRUE(torch::equal(unused.detach(), unused_before));
  EXPECT_EQ(opt.state().count(optim::state_key(unused)), 0u);
  EXPECT_EQ(opt.state_bytes(unused), 0);
}

TEST(Behaviour, NonContiguousGradientsAndParametersWork) {
  // A gradient stored transposed, and a parameter that is a transposed view:
  // the same update as with contiguous tensors.
  auto contiguous = param({64, 96}, 4);
  const auto transposed = contiguous.detach().t().contiguous();
  auto view = transposed.t().set_requires_grad(true);  // a leaf, strided
  ASSERT_FALSE(view.is_contiguous());
  const auto g = torch::randn({64, 96});
  optim::AdamW8bit a({contiguous}), b({view});
  contiguous.mutable_grad() = g.clone();
  view.mutable_grad() = g.t().contiguous().t();
  ASSERT_FALSE(view.grad().is_contiguous());
  a.step();
  b.step();
  EXPECT_TRUE(torch::equal(contiguous.detach(), view.detach()));
}

TEST(Behaviour, SixteenBitParametersKeepTheirDtype) {
  for (auto dtype : {torch::kBFloat16, torch::kFloat16}) {
    auto p = (torch::randn({5000}) * 0.1).to(dtype).set_requires_grad(true);
    auto reference = p.detach().to(torch::kFloat32).set_requires_grad(true);
    optim::AdamW8bit opt({p}), ref_opt({reference});
    for (int t = 0; t < 3; ++t) {
      const auto g = torch::randn({5000}) * 0.01;
      p.mutable_grad() = g.to(dtype);
      reference.mutable_grad() = g.to(dtype).to(torch::kFloat32);
      opt.step();
      ref_opt.step();
    }
    EXPECT_EQ(p.scalar_type(), dtype);
    // The update is computed in float32 and rounded to the 16-bit type once
    // per step: half an ulp of the type at the parameter's magnitude along the
    // way (|p| now plus three Adam steps of at most ~lr) per step.
    const double ulp = dtype == torch::kBFloat16 ? 0x1p-7 : 0x1p-10;  // relative spacing
    const auto diff = (p.detach().to(torch::kFloat32) - reference.detach()).abs();
    const auto bound = 3 * 0.5 * ulp * (reference.detach().abs() + 3 * 1e-3);
    EXPECT_TRUE((diff <= bound).all().item<bool>()) << dtype;
  }
}

TEST(Behaviour, PercentileClippingFollowsBitsandbytes) {
  // bitsandbytes' rule: squared gradient norm into slot step % 100 of a
  // history (every slot on step 1), clip = sqrt(sorted history[percentile]),
  // g *= clip / ||g|| when ||g|| > clip. Reference: torch::optim::AdamW fed
  // with gradients clipped that way in double.
  const int64_t percentile = 5;
  auto p = param({700}, 9);
  auto r = p.detach().clone().set_requires_grad(true);
  optim::AdamW8bit ours(
      {p}, optim::AdamW8bitOptions(1e-2).optim_bits(32).percentile_clipping(percentile));
  torch::optim::AdamW theirs({r}, torch::optim::AdamWOptions(1e-2));
  std::vector<double> history(100, 0.0);
  int clipped = 0;
  for (int step = 1; step <= 40; ++step) {
    torch::manual_seed(step);
    // Gradient scales that vary by 10x, so that some steps get clipped.
    const auto g = torch::randn({700}) * (0.01 * (1 + 9 * (step % 3 == 0)));
    const double sq = g.to(torch::kFloat64).pow(2).sum().item<double>();
    if (step == 1)
      std::fill(history.begin(), history.end(), double(float(sq)));
    else
      history[size_t(step % 100)] = double(float(sq));
    std::vector<double> sorted = history;
    std::sort(sorted.begin(), sorted.end());
    const double clip = std::sqrt(sorted[size_t(percentile)]), norm = std::sqrt(double(float(sq)));
    const double scale = norm > clip ? clip / norm : 1.0;
    clipped += scale < 1.0;
    p.mutable_grad() = g.clone();
    r.mutable_grad() = g * float(scale);
    ours.step();
    theirs.step();
  }
  EXPECT_GT(clipped, 5);
  // As fidelity_test, plus the clip factor reaches the kernel as a float32
  // multiplier (relative rounding 2^-24 of each gradient).
  EXPECT_LE(testing::max_relative_error({p}, {r}), 1e-6);
  EXPECT_EQ(state_of(ours, p).gnorm_vec().numel(), 100);
}

TEST(Behaviour, MaxUnormCapsTheUpdateNorm) {
  // bitsandbytes' max_unorm on Adam: with u = m_hat / (sqrt(v_hat) + eps), the
  // step lr * u is scaled by max_unorm * ||p|| / ||u|| when ||u|| exceeds
  // max_unorm * ||p||. Double-precision reference written here.
  const double lr = 1e-2, max_unorm = 0.02, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  auto p = param({2000}, 10);
  auto ref = p.detach().to(torch::kFloat64);
  auto m = torch::zeros_like(ref), v = torch::zeros_like(ref);
  optim::Adam8bit ours({p}, optim::Adam8bitOptions(lr).optim_bits(32).max_unorm(max_unorm));
  int capped = 0;
  for (int t = 1; t <= 30; ++t) {
    torch::manual_seed(100 + t);
    const auto g = torch::randn({2000}) * 0.01;
    p.mutable_grad() = g.clone();
    ours.step();
    const auto gd = g.to(torch::kFloat64);
    m = b1 * m + (1 - b1) * gd;
    v = b2 * v + (1 - b2) * gd * gd;
    const auto u = (m / (1 - std::pow(b1, t))) / ((v / (1 - std::pow(b2, t))).sqrt() + eps);
    const double un = u.norm().item<double>(), cap = max_unorm * ref.norm().item<double>();
    const double scale = un > cap ? cap / un : 1.0;
    capped += scale < 1.0;
    ref = ref - lr * scale * u;
  }
  EXPECT_GT(capped, 10);
  // Float states and norms against double: the walk of fidelity_test.
  EXPECT_LE(testing::max_relative_error({p}, {ref}), 1e-6);
}

// ---------------------------------------------------------------------------
// Non-finite gradients.

TEST(Behaviour, NonFiniteGradientSkipsTheWholeStep) {
  // Run A sees grads g0, bad, g1; run B sees g0, g1: skipping must leave no
  // trace, so both end bitwise equal.
  for (Kind kind : testing::all_kinds())
    for (float bad : {NAN, INFINITY}) {
      auto a = testing::make_params(1), b = testing::make_params(1);
      auto opt_a = testing::make_optimizer(kind, a, {});
      auto opt_b = testing::make_optimizer(kind, b, {});
      testing::set_grads(a, 1, 0);
      testing::set_grads(b, 1, 0);
      opt_a->step();
      opt_b->step();
      testing::set_grads(a, 1, 1);
      a[2].mutable_grad()[17] = bad;
      const auto before = a[0].detach().clone();
      opt_a->step();
      EXPECT_TRUE(torch::equal(a[0].detach(), before)) << testing::kind_name(kind);
      EXPECT_EQ(opt_a->nonfinite_stats().skipped_steps, 1);
      EXPECT_EQ(state_of(*opt_a, a[0]).step(), 1);
      testing::set_grads(a, 1, 2);
      testing::set_grads(b, 1, 2);
      opt_a->step();
      opt_b->step();
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_TRUE(torch::equal(a[i].detach(), b[i].detach())) << testing::kind_name(kind);
    }
}

TEST(Behaviour, NonFiniteGradientRaisesWhenAsked) {
  auto params = testing::make_params(2);
  optim::AdamW8bit opt(params);
  opt.set_nonfinite_policy(optim::NonFinitePolicy::Raise);
  testing::set_grads(params, 2, 0);
  params[1].mutable_grad()[3] = NAN;
  const auto before = params[0].detach().clone();
  expect_error([&] { opt.step(); },
               {"AdamW8bit", "parameter 1 of group 0", "NaN or infinite", "nothing was updated"});
  EXPECT_TRUE(torch::equal(params[0].detach(), before));
}

// A finite gradient whose update overflows float32 (3e38 moved by lr 1e38):
// under Raise the step is applied to every other block and parameter (step
// counts and states stay consistent), then raises naming the parameter.
TEST(Behaviour, AnUpdateThatOverflowsRaisesAfterTheWholeStep) {
  auto big = torch::full({256}, 3e38f).set_requires_grad(true);
  auto small = param({256}, 4);
  const auto big_before = big.detach().clone(), small_before = small.detach().clone();
  optim::AdamW8bit opt({big, small}, optim::AdamW8bitOptions(1e38).weight_decay(0));
  opt.set_nonfinite_policy(optim::NonFinitePolicy::Raise);
  big.mutable_grad() = torch::full({256}, -1.0f);
  small.mutable_grad() = torch::randn({256}) * 0.01;
  expect_error([&] { opt.step(); }, {"AdamW8bit", "1 block(s) of parameter 0 of group 0",
                                     "would have become NaN or infinite",
                                     "the rest of the step was applied"});
  EXPECT_TRUE(torch::equal(big.detach(), big_before));
  EXPECT_FALSE(torch::equal(small.detach(), small_before));
  EXPECT_TRUE(torch::isfinite(small.detach()).all().item<bool>());
  EXPECT_EQ(opt.nonfinite_stats().skipped_blocks, 1);
  EXPECT_EQ(state_of(opt, big).step(), 1);
  EXPECT_EQ(state_of(opt, small).step(), 1);
}

TEST(Behaviour, SkipBlocksLeavesOnlyTheAffectedBlock) {
  auto p = param({1024}, 3);
  const auto before = p.detach().clone();
  optim::AdamW8bit opt({p}, optim::AdamW8bitOptions().min_8bit_size(1024));
  opt.set_nonfinite_policy(optim::NonFinitePolicy::SkipBlocks);
  p.mutable_grad() = torch::randn({1024}) * 0.01;
  p.mutable_grad()[300] = INFINITY;  // block 1 (elements 256..511)
  opt.step();
  EXPECT_EQ(opt.nonfinite_stats().skipped_blocks, 1);
  EXPECT_EQ(opt.nonfinite_stats().skipped_steps, 0);
  EXPECT_TRUE(torch::equal(p.detach().slice(0, 256, 512), before.slice(0, 256, 512)));
  EXPECT_TRUE((p.detach().slice(0, 0, 256) != before.slice(0, 0, 256)).all().item<bool>());
  const auto& st = state_of(opt, p);
  EXPECT_EQ(st.absmax1()[1].item<float>(), 0.0f);  // block 1's state never moved
  EXPECT_GT(st.absmax1()[0].item<float>(), 0.0f);
  EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

// ---------------------------------------------------------------------------
// Clear errors.

TEST(Behaviour, UnsupportedInputIsRefusedWithAClearMessage) {
  {
    auto emb = param({20, 4});
    optim::Adam8bit opt({emb});
    emb.mutable_grad() =
        torch::sparse_coo_tensor(torch::tensor({{0, 3}}), torch::ones({2, 4}), {20, 4});
    expect_error([&] { opt.step(); }, {"Adam8bit", "parameter 0 of group 0", "sparse gradient"});
  }
  {
    auto w = param({6});
    optim::Lion8bit opt({w});
    w.mutable_grad() = torch::ones({6}, torch::kFloat64);
    expect_error([&] { opt.step(); }, {"Lion8bit", "dtype Double", "parameter's dtype"});
  }
  {
    auto w = torch::zeros({6}, torch::kInt64);
    optim::AdamW8bit opt({w});
    w.mutable_grad() = torch::zeros({6}, torch::kInt64);
    expect_error([&] { opt.step(); }, {"dtype Long", "float32, float16 or bfloat16"});
  }
  {
    auto w = torch::empty({6}, torch::TensorOptions().device(torch::kMeta)).set_requires_grad(true);
    expect_error([&] { optim::RMSprop8bit opt({w}); },
                 {"RMSprop8bit", "are on meta", "CPU and CUDA tensors"});
  }
  {
    auto w = param({6});
    optim::LAMB8bit opt({w});
    w.mutable_grad() = torch::ones({3, 2});
    expect_error([&] { opt.step(); }, {"LAMB8bit", "shape [3, 2]", "parameter's shape"});
  }
}

TEST(Behaviour, InvalidOptionsAreRefused) {
  auto w = std::vector<torch::Tensor>{param({4})};
  expect_error([&] { (void)optim::AdamW8bit(w, optim::AdamW8bitOptions(-1.0)); },
               {"learning rate", "-1"});
  expect_error(
      [&] {
        (void)optim::Adam8bit(w, optim::Adam8bitOptions().betas({0.9, 1.0}));
      },
      {"betas[1]", "[0, 1)"});
  expect_error([&] { (void)optim::Adam8bit(w, optim::Adam8bitOptions().amsgrad(true)); },
               {"amsgrad"});
  expect_error([&] { (void)optim::Lion8bit(w, optim::Lion8bitOptions().optim_bits(16)); },
               {"optim_bits is 16"});
  expect_error([&] { (void)optim::LAMB8bit(w, optim::LAMB8bitOptions().block_size(100)); },
               {"block_size is 100", "power of two"});
  expect_error([&] { (void)optim::LAMB8bit(w, optim::LAMB8bitOptions().clamp_value(0)); },
               {"clamp_value"});
  expect_error([&] { (void)optim::RMSprop8bit(w, optim::RMSprop8bitOptions().centered(true)); },
               {"centered"});
  expect_error(
      [&] { (void)optim::RMSprop8bit(w, optim::RMSprop8bitOptions().percentile_clipping(101)); },
      {"percentile_clipping is 101"});
  expect_error([&] { (void)optim::AdamW8bit(w, optim::AdamW8bitOptions().max_unorm(-1)); },
               {"max_unorm is -1"});
  // A group added later is checked at the next step.
  optim::AdamW8bit opt(w);
  opt.add_param_group(torch::optim::OptimizerParamGroup(
      {param({4})},
      std::make_unique<optim::AdamW8bitOptions>(optim::AdamW8bitOptions(1e-3).eps(-1))));
  expect_error([&] { opt.step(); }, {"epsilon"});
}

}  // namespace
}  // namespace lowbit
