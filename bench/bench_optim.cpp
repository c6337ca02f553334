// Optimizer step time, in one run: each 8-bit optimizer against its torch
// counterpart (torch::optim::Adam, AdamW, RMSprop; Lion and LAMB as torch-op
// loops written here, as their reference implementations do them) and against
// a memcpy of the parameter (the bandwidth roofline), at 1M, 16M and 64M
// parameters with one thread and with all threads. Groups are
// "<optimizer>/<size>/threads:<t>"; ops are torch, lowbit8 (default policy),
// lowbit8_skipblocks (no gradient check), lowbit32 (float32 states),
// lowbit8_f16 / lowbit8_bf16 (AdamW8bit on a half / bfloat16 parameter),
// torch_fused (Adam and AdamW: torch's fused CPU kernel, at::_fused_adam_ /
// at::_fused_adamw_, what torch.optim.AdamW(fused=True) runs; libtorch 2.4+,
// so Debian's 1.13 has no such row), lowbit8_opencl (end to end on the first
// OpenCL device) and memcpy.
// On the first OpenCL GPU (else the first device) the kernels also run on
// device-resident buffers, groups "<optimizer>/<size>/opencl_resident":
// lowbit8 (the fused update; LAMB with its norms pass), gradient_stats (adamw
// group), each queued with the step slot and flags in device memory as an
// optimizer step queues it, then one wait; and the device's buffer copy as
// the roofline (op copy).
// LOWBIT_BENCH_SIZES (e.g. "1M,16M") restricts the sizes for a quick run, and
// may name 256M, which is not run by default. The GPU rows alone:
//   LOWBIT_BENCH_SIZES=256M bench_optim --benchmark_filter=opencl_resident
#include <omp.h>

#include <cmath>
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
#include "quant/codebook.h"

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
#ifdef LOWBIT_BENCH_TORCH_FUSED
  if (f == Family::Adam || f == Family::AdamW)
    reg("torch_fused", [f, n, threads](benchmark::State& state) {
      set_threads(threads);
      Problem problem(n);
      TorchFusedAdam fused(f, problem.param);
      fused.step();  // states touched outside the timing
      for (auto _ : state) fused.step();
      state.counters["bytes"] = 28.0 * double(n);  // p, m, v read and written, g read
    });
#endif
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

// The hyper-parameters of a step as the optimizers combine them (step 1,
// the bench's learning rates), for the kernel-level ops.
kernels::OptimizerArgs resident_args(Family f) {
  kernels::OptimizerArgs a{};
  a.gnorm_scale = 1.0f;
  a.decay = 1.0f;
  a.m_scale = 1.0f;
  const auto betas = [&](double b1, double b2) {
    a.beta1 = float(b1);
    a.one_minus_beta1 = float(1 - b1);
    a.beta2 = float(b2);
    a.one_minus_beta2 = float(1 - b2);
  };
  switch (f) {
    case Family::Adam:
    case Family::AdamW:
    case Family::LAMB:
      betas(0.9, 0.999);
      a.eps = float(1e-8 * std::sqrt(0.001));
      a.lr_step = float(-1e-3 * std::sqrt(0.001) / 0.1);
      if (f == Family::AdamW) a.decay = float(1 - 1e-3 * 0.01);
      if (f == Family::LAMB) {
        a.m_scale = float(std::sqrt(0.001) / 0.1);
        a.lr_step = -1e-3f;
        a.l2 = 0.01f;
      }
      break;
    case Family::Lion:
      betas(0.9, 0.99);
      a.lr_step = -1e-4f;
      a.decay = float(1 - 1e-4 * 0.01);
      break;
    case Family::RMSprop:
      betas(0.99, 0.0);
      a.eps = 1e-8f;
      a.lr_step = -1e-3f;
      break;
  }
  return a;
}

kernels::OptimizerRule rule_of(Family f) {
  switch (f) {
    case Family::LAMB: return kernels::OptimizerRule::LAMB;
    case Family::Lion: return kernels::OptimizerRule::Lion;
    case Family::RMSprop: return kernels::OptimizerRule::RMSprop;
    default: return kernels::OptimizerRule::Adam;
  }
}

// A parameter of n float32 values with 8-bit states, every buffer on the
// device (uploaded once): what a step costs without host transfers.
struct ResidentProblem {
  std::unique_ptr<kernels::Buffer> param, grad, state1, absmax1, qmap1, state2, absmax2, qmap2;
  kernels::OptimizerOperands op;

  ResidentProblem(kernels::Backend& be, Family f, int64_t n) {
    const Problem host(n);
    const size_t blocks = kernels::num_blocks(size_t(n), 256);
    const auto upload = [&](const torch::Tensor& t) {
      const torch::Tensor c = t.contiguous();
      auto b = be.allocate(size_t(c.numel()) * c.element_size());
      be.write(*b, c.data_ptr(), b->bytes());
      return b;
    };
    param = upload(host.param.detach());
    grad = upload(host.param.grad());
    const bool two = f == Family::Adam || f == Family::AdamW || f == Family::LAMB;
    // States start at 0 (absmax 0): the first step, outside the timing, fills them.
    const auto zero_state = [&](bool is_signed, std::unique_ptr<kernels::Buffer>& s,
                                std::unique_ptr<kernels::Buffer>& absmax,
                                std::unique_ptr<kernels::Buffer>& qmap) {
      const torch::Tensor map = quant::create_dynamic_map(is_signed);
      const int zero = kernels::zero_index(map.data_ptr<float>(), 256);
      s = upload(torch::full({n}, zero, torch::kUInt8));
      absmax = upload(torch::zeros({int64_t(blocks)}));
      qmap = upload(map);
    };
    zero_state(true, state1, absmax1, qmap1);
    if (two) zero_state(false, state2, absmax2, qmap2);
    op.rule = rule_of(f);
    op.n = size_t(n);
    op.param = param.get();
    op.grad = grad.get();
    op.state1 = state1.get();
    op.absmax1 = absmax1.get();
    op.qmap1 = qmap1.get();
    op.state2 = state2.get();
    op.absmax2 = absmax2.get();
    op.qmap2 = qmap2.get();
    // One parameter's step slot and its optimizer's flags, as a step keeps them on the device.
    kernels::StepSlot slot{};
    slot.args = resident_args(f);
    const kernels::StepFlags clear{};
    slots = be.allocate(sizeof(slot));
    flags = be.allocate(sizeof(clear));
    be.write(*slots, &slot, sizeof(slot));
    be.write(*flags, &clear, sizeof(clear));
  }
  std::unique_ptr<kernels::Buffer> slots, flags;
};

void register_resident_group(Family f, int64_t n, const std::string& size,
                             const std::shared_ptr<kernels::Backend>& be) {
  const std::string group = std::string(family_name(f)) + "/" + size + "/opencl_resident";
  const auto reg = [&](const std::string& op, std::function<void(benchmark::State&)> fn) {
    benchmark::RegisterBenchmark((op + "/" + group).c_str(), fn)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(0.5);
  };
  reg("copy", [n, be](benchmark::State& state) {
    const size_t bytes = size_t(n) * sizeof(float);
    const auto src = be->allocate(bytes), dst = be->allocate(bytes);
    be->copy(*src, *dst, bytes);
    be->synchronize();
    for (auto _ : state) {
      be->copy(*src, *dst, bytes);
      be->synchronize();
    }
    state.counters["bytes"] = 2.0 * double(bytes);
  });
  reg("lowbit8", [f, n, be](benchmark::State& state) {
    ResidentProblem problem(*be, f, n);
    // The ops as an optimizer step queues them, then the wait for the device.
    const auto step = [&] {
      if (f == Family::LAMB)
        be->optimizer_update_norms(problem.op, *problem.slots, 0, *problem.flags);
      be->optimizer_update(problem.op, *problem.slots, 0, *problem.flags);
      be->synchronize();
    };
    step();
    for (auto _ : state) step();
    state.counters["bytes"] = lowbit_bytes_per_param(f, 8, false, 4) * double(n);
  });
  if (f == Family::AdamW)
    reg("gradient_stats", [n, be](benchmark::State& state) {
      ResidentProblem problem(*be, Family::AdamW, n);
      const auto check = [&] {
        be->gradient_stats(*problem.op.grad, kernels::DType::F32, size_t(n), 256, *problem.slots,
                           0);
        be->synchronize();
      };
      check();
      for (auto _ : state) check();
      state.counters["bytes"] = 4.0 * double(n);
    });
}

Sizes sizes() {
  return sizes_from_env(
      {{"1M", int64_t(1) << 20}, {"16M", int64_t(16) << 20}, {"64M", int64_t(64) << 20}},
      {{"256M", int64_t(256) << 20}});
}

}  // namespace
}  // namespace lowbit::bench

int main(int argc, char** argv) {
  using namespace lowbit::bench;
  benchmark::Initialize(&argc, argv);
  const int all = omp_get_max_threads();
  std::vector<int> thread_counts = {1};
  if (all > 1) thread_counts.push_back(all);
  const auto families = {Family::Adam, Family::AdamW, Family::RMSprop, Family::Lion, Family::LAMB};
  // The first OpenCL GPU, else the first device (index -1).
  std::shared_ptr<lowbit::kernels::Backend> opencl;
  if (!lowbit::kernels::opencl_devices().empty()) {
    opencl = lowbit::kernels::make_backend({"opencl", -1, ""});
    std::printf("opencl_resident: %s\n", opencl->name().c_str());
  }
  for (const auto& [name, n] : sizes()) {
    for (int threads : thread_counts)
      for (Family f : families) register_group(f, n, name, threads);
    if (opencl)
      for (Family f : families) register_resident_group(f, n, name, opencl);
  }
  RatioReporter reporter(std::vector<std::string>{"torch", "torch_fused", "memcpy", "copy"});
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
