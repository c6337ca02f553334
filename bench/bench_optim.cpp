// Optimizer step time, in one run: each 8-bit optimizer against its torch
// counterpart (torch::optim::Adam, AdamW, RMSprop; Lion and LAMB as torch-op
// loops written here, as their reference implementations do them) and against
// a memcpy of the parameter (the bandwidth roofline), at 1M, 16M and 64M
// parameters with one thread and with all threads. Groups are
// "<optimizer>/<size>/threads:<t>"; ops are torch, lowbit8 (default policy),
// lowbit8_skipblocks (no gradient check), lowbit32 (float32 states),
// lowbit8_f16 / lowbit8_bf16 (AdamW8bit on a half / bfloat16 parameter),
// lowbit8_opencl (end to end on the first OpenCL device) and memcpy.
// LOWBIT_BENCH_SIZES (e.g. "1M,16M") restricts the sizes for a quick run.
#include <omp.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench/optim_common.h"
#include "bench/ratio_reporter.h"
#include "kernels/backend.h"
#include "optim/optim.h"

namespace lowbit::bench {
namespace {

// Lion as lucidrains/lion-pytorch writes it with torch ops.
class TorchLion {
 public:
  TorchLion(torch::Tensor p, double lr, double wd) : p_(std::move(p)), lr_(lr), wd_(wd) {
    m_ = torch::zeros_like(p_);
  }
  void step() {
    torch::NoGradGuard no_grad;
    const auto& g = p_.grad();
    p_.mul_(1 - lr_ * wd_);
    p_.add_(m_.mul(0.9).add_(g, 0.1).sign_(), -lr_);
    m_.mul_(0.99).add_(g, 0.01);
  }

 private:
  torch::Tensor p_, m_;
  double lr_, wd_;
};

// LAMB as torch-optimizer's Lamb writes it with torch ops (trust ratio with
// the weight norm clamped to 10).
class TorchLamb {
 public:
  TorchLamb(torch::Tensor p, double lr, double wd) : p_(std::move(p)), lr_(lr), wd_(wd) {
    m_ = torch::zeros_like(p_);
    v_ = torch::zeros_like(p_);
  }
  void step() {
    torch::NoGradGuard no_grad;
    ++t_;
    const auto& g = p_.grad();
    m_.mul_(0.9).add_(g, 0.1);
    v_.mul_(0.999).addcmul_(g, g, 0.001);
    const double c1 = 1 - std::pow(0.9, t_), c2 = 1 - std::pow(0.999, t_);
    auto u = (m_ / c1).div_((v_ / c2).sqrt_().add_(1e-6));
    u.add_(p_, wd_);
    const double w = std::min(p_.norm().item<double>(), 10.0), a = u.norm().item<double>();
    p_.add_(u, -lr_ * (w > 0 && a > 0 ? w / a : 1.0));
  }

 private:
  torch::Tensor p_, m_, v_;
  double lr_, wd_;
  int t_ = 0;
};

std::function<void()> torch_step(Family f, const torch::Tensor& p) {
  switch (f) {
    case Family::Adam: {
      auto opt = std::make_shared<torch::optim::Adam>(std::vector<torch::Tensor>{p},
                                                      torch::optim::AdamOptions(1e-3));
      return [opt] { opt->step(); };
    }
    case Family::AdamW: {
      auto opt = std::make_shared<torch::optim::AdamW>(std::vector<torch::Tensor>{p},
                                                       torch::optim::AdamWOptions(1e-3));
      return [opt] { opt->step(); };
    }
    case Family::RMSprop: {
      auto opt = std::make_shared<torch::optim::RMSprop>(std::vector<torch::Tensor>{p},
                                                         torch::optim::RMSpropOptions(1e-3));
      return [opt] { opt->step(); };
    }
    case Family::Lion: {
      auto opt = std::make_shared<TorchLion>(p, 1e-4, 0.01);
      return [opt] { opt->step(); };
    }
    case Family::LAMB: {
      auto opt = std::make_shared<TorchLamb>(p, 1e-3, 0.01);
      return [opt] { opt->step(); };
    }
  }
  return {};
}

void set_threads(int threads) {
  omp_set_num_threads(threads);
  torch::set_num_threads(threads);
}

void register_group(Family f, int64_t n, const std::string& size, int threads) {
  const std::string group =
      std::string(family_name(f)) + "/" + size + "/threads:" + std::to_string(threads);
  const auto reg = [&](const std::string& op, std::function<void(benchmark::State&)> fn) {
    benchmark::RegisterBenchmark((op + "/" + group).c_str(), fn)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(0.5);
  };
  reg("memcpy", [n, threads](benchmark::State& state) {
    set_threads(threads);
    const auto src = torch::randn({n});
    auto dst = torch::empty({n});
    auto& be = kernels::cpu_backend();
    const size_t bytes = size_t(n) * sizeof(float);
    const auto host = kernels::Location::host();
    const auto from = be.wrap(src.data_ptr(), bytes, host), to = be.wrap(dst.data_ptr(), bytes, host);
    be.copy(*from, *to, bytes);  // first touch outside the timing
    for (auto _ : state) be.copy(*from, *to, bytes);
    state.counters["bytes"] = 2.0 * double(bytes);
  });
  reg("torch", [f, n, threads](benchmark::State& state) {
    set_threads(threads);
    Problem problem(n);
    const auto step = torch_step(f, problem.param);
    step();  // states allocated outside the timing
    for (auto _ : state) step();
  });
  const auto lowbit = [&](const std::string& op, int64_t bits, optim::NonFinitePolicy policy,
                          std::shared_ptr<kernels::Backend> backend = nullptr,
                          torch::ScalarType dtype = torch::kFloat32) {
    reg(op, [f, n, threads, bits, policy, backend, dtype](benchmark::State& state) {
      set_threads(threads);
      Problem problem(n, dtype);
      auto opt = lowbit_optimizer(f, problem.param, bits, backend);
      opt->set_nonfinite_policy(policy);
      opt->step();
      for (auto _ : state) opt->step();
      // The roofline compares CPU memory traffic; the OpenCL run moves its
      // data to and from the device as well, so it reports no bytes.
      const bool checked = policy != optim::NonFinitePolicy::SkipBlocks;
      const double elem = double(c10::elementSize(dtype));
      if (!backend) state.counters["bytes"] = lowbit_bytes_per_param(f, bits, checked, elem) * double(n);
      state.counters["state_B/param"] = double(opt->state_bytes()) / double(n);
    });
  };
  lowbit("lowbit8", 8, optim::NonFinitePolicy::SkipStep);
  if (f == Family::AdamW) {
    lowbit("lowbit8_skipblocks", 8, optim::NonFinitePolicy::SkipBlocks);
    lowbit("lowbit32", 32, optim::NonFinitePolicy::SkipStep);
    lowbit("lowbit8_f16", 8, optim::NonFinitePolicy::SkipStep, nullptr, torch::kFloat16);
    lowbit("lowbit8_bf16", 8, optim::NonFinitePolicy::SkipStep, nullptr, torch::kBFloat16);
    // End to end on the OpenCL device: states resident, parameter and gradient
    // copied in and the parameter out in each step.
    if (threads == omp_get_max_threads() && !kernels::opencl_devices().empty())
      lowbit("lowbit8_opencl", 8, optim::NonFinitePolicy::SkipStep,
             kernels::make_backend({"opencl", 0, ""}));
  }
}

Sizes sizes() {
  return sizes_from_env(
      {{"1M", int64_t(1) << 20}, {"16M", int64_t(16) << 20}, {"64M", int64_t(64) << 20}});
}

}  // namespace
}  // namespace lowbit::bench

int main(int argc, char** argv) {
  using namespace lowbit::bench;
  benchmark::Initialize(&argc, argv);
  const int all = omp_get_max_threads();
  std::vector<int> thread_counts = {1};
  if (all > 1) thread_counts.push_back(all);
  for (const auto& [name, n] : sizes())
    for (int threads : thread_counts)
      for (Family f : {Family::Adam, Family::AdamW, Family::RMSprop, Family::Lion, Family::LAMB})
        register_group(f, n, name, threads);
  RatioReporter reporter(std::vector<std::string>{"torch", "memcpy"});
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
