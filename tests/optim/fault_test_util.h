// Shared by the fault tests (an OpenCL device failing, a host allocation
// failing): the counter of an injected call, a small AdamW8bit problem with
// 8-bit and 32-bit states in two dtypes, the bit-for-bit comparison of an
// optimizer that met a fault with a twin that did not, and the loop that
// fails every call of a first step in turn.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "optim/optim.h"
#include "tests/optim/optim_test_util.h"
#include "tests/support/expect_error.h"

namespace lowbit::testing::faults {

// One injected call: `seen` counts the calls that reached the injector;
// the call numbered `fail_at` (counting from 1) fails, none while it is 0.
struct Injection {
  int seen = 0;
  int fail_at = 0;
  int failed = 0;
  // Fails the `k`-th call from now on.
  void arm(int k) { fail_at = seen + k; }
  void disarm() { fail_at = 0; }
  bool fails_now() {
    ++seen;
    if (fail_at == 0 || seen != fail_at) return false;
    ++failed;
    return true;
  }
};

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

// A first AdamW8bit step with the k-th call `calls` sees failing, for k = 1,
// 2, ... until a step passes without reaching it. After each failure the
// optimizer must be bit for bit a twin's that never stepped, and its next
// step the twin's first. `backend()` makes each run's backend (a fresh one
// per run: backends keep what they made; nullptr is the CPU); `check` sees
// each failure's message. Prints the failures by `head(message)` and
// returns how many there were.
inline int fail_each_call_in_turn(Injection& calls,
                                  const std::function<std::shared_ptr<kernels::Backend>()>& backend,
                                  const std::function<void(const std::string&)>& check,
                                  const std::function<std::string(const std::string&)>& head) {
  int tried = 0;
  std::map<std::string, int> raised_by;
  for (int k = 1;; ++k) {
    SCOPED_TRACE("failing call " + std::to_string(k));
    auto run_backend = backend();
    auto pa = make_params(), pb = clone(pa);
    auto a = make_adamw(pa, run_backend), twin = make_adamw(pb, run_backend);
    set_grads(pa, 0);
    set_grads(pb, 0);
    const int failed_before = calls.failed;
    calls.arm(k);
    const std::string message = message_of([&] { a->step(); });
    calls.disarm();
    if (calls.failed == failed_before) {
      EXPECT_EQ(message, "(no exception)");
      break;
    }
    ++tried;
    check(message);
    ++raised_by[head(message)];
    expect_identical(*a, pa, *twin, pb, "after the failed step");
    a->step();
    twin->step();
    expect_identical(*a, pa, *twin, pb, "after the first step");
    if (k >= 200) {
      ADD_FAILURE() << "the step never passed";
      break;
    }
  }
  std::printf("calls failed in turn: %d\n", tried);
  for (const auto& [text, count] : raised_by) std::printf("  %2d x %s\n", count, text.c_str());
  return tried;
}

}  // namespace lowbit::testing::faults
