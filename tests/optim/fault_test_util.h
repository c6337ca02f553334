// Shared by the fault tests (an OpenCL device failing, a host allocation
// failing): a small AdamW8bit problem with 8-bit and 32-bit states in two
// dtypes, and the bit-for-bit comparison of an optimizer that met a fault
// with a twin that did not.
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "optim/optim.h"
#include "tests/optim/optim_test_util.h"

namespace lowbit::testing::faults {

// AdamW8bit's parameters: 8-bit states (float32 5120 elements and bfloat16
// 4200), 32-bit states (37 elements, below min_8bit_size).
inline std::vector<torch::Tensor> make_params() {
  torch::manual_seed(11);
  std::vector<torch::Tensor> params = {torch::randn({64, 80}) * 0.1, torch::randn({37}) * 0.1,
                                       (torch::randn({4200}) * 0.1).to(torch::kBFloat16)};
  for (auto& p : params) p.set_requires_grad(true);
  return params;
}

inline std::vector<torch::Tensor> clone(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) out.push_back(p.detach().clone().set_requires_grad(true));
  return out;
}

// Gradients of step `t` in the parameters' dtypes; `frozen` parameters get none.
inline void set_grads(const std::vector<torch::Tensor>& params, int t,
                      std::vector<size_t> frozen = {}) {
  torch::manual_seed(1000 + t);
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor g = (torch::randn(params[i].sizes()) * 0.01).to(params[i].scalar_type());
    if (std::find(frozen.begin(), frozen.end(), i) != frozen.end()) g = torch::Tensor();
    params[i].mutable_grad() = g;
  }
}

// An error's first line (libtorch appends where it was raised).
inline std::string first_line(const std::string& message) {
  return message.substr(0, message.find('\n'));
}

inline bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  const torch::Tensor x = a.detach().cpu().contiguous(), y = b.detach().cpu().contiguous();
  return x.scalar_type() == y.scalar_type() && x.sizes() == y.sizes() &&
         std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

// Parameters, states (codes, absmax, gradient-norm history), step counts and
// the non-finite counters of `a` bit for bit those of `b`.
inline void expect_identical(optim::Optimizer8bit& a, const std::vector<torch::Tensor>& pa,
                             optim::Optimizer8bit& b, const std::vector<torch::Tensor>& pb,
                             const std::string& when) {
  a.sync_state();
  b.sync_state();
  for (size_t i = 0; i < pa.size(); ++i) {
    const std::string what = when + ", parameter " + std::to_string(i);
    EXPECT_TRUE(same_bits(pa[i], pb[i])) << what;
    const optim::QuantizedParamState* sa = a.param_state(0, i);
    const optim::QuantizedParamState* sb = b.param_state(0, i);
    ASSERT_EQ(sa == nullptr, sb == nullptr) << what << ": a state exists in one only";
    if (!sa) continue;
    EXPECT_EQ(sa->step(), sb->step()) << what;
    EXPECT_TRUE(same_bits(sa->state1(), sb->state1())) << what << ": state1";
    EXPECT_TRUE(same_bits(sa->absmax1(), sb->absmax1())) << what << ": absmax1";
    EXPECT_TRUE(same_bits(sa->state2(), sb->state2())) << what << ": state2";
    EXPECT_TRUE(same_bits(sa->absmax2(), sb->absmax2())) << what << ": absmax2";
    EXPECT_TRUE(same_bits(sa->gnorm_vec(), sb->gnorm_vec())) << what << ": gnorm_vec";
  }
  EXPECT_EQ(a.nonfinite_stats().skipped_steps, b.nonfinite_stats().skipped_steps) << when;
  EXPECT_EQ(a.nonfinite_stats().skipped_blocks, b.nonfinite_stats().skipped_blocks) << when;
}

inline std::unique_ptr<optim::Optimizer8bit> make_adamw(
    const std::vector<torch::Tensor>& params, std::shared_ptr<kernels::Backend> backend) {
  testing::Setup s;
  s.percentile_clipping = 50;  // a gradient-norm history in the states too
  return make_optimizer(Kind::AdamW, params, s, std::move(backend));
}

}  // namespace lowbit::testing::faults
