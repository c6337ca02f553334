// What the optimizer benchmarks share: the optimizer families, a problem of n
// parameters, lowbit's optimizer of a family, the bytes a lowbit step must
// move (the roofline's count), the sizes to run, and torch's fused Adam /
// AdamW step where libtorch has it.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>
#include <torch/version.h>

// torch's fused Adam / AdamW kernels (CPU and CUDA) are in libtorch 2.4 and later.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define LOWBIT_BENCH_TORCH_FUSED 1
#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/_fused_adamw.h>
#endif

#include "optim/optim.h"

namespace lowbit::bench {

enum class Family { Adam, AdamW, RMSprop, Lion, LAMB };

inline const char* family_name(Family f) {
  switch (f) {
    case Family::Adam: return "adam";
    case Family::AdamW: return "adamw";
    case Family::RMSprop: return "rmsprop";
    case Family::Lion: return "lion";
    case Family::LAMB: return "lamb";
  }
  return "?";
}

// One parameter of n values with a gradient of its dtype, as a model's would
// be, drawn on `device`.
struct Problem {
  torch::Tensor param;
  explicit Problem(int64_t n, torch::ScalarType dtype = torch::kFloat32,
                   torch::Device device = torch::kCPU) {
    torch::manual_seed(0);
    const auto on = torch::TensorOptions().device(device);
    param = (torch::randn({n}, on) * 0.1).to(dtype).set_requires_grad(true);
    param.mutable_grad() = (torch::randn({n}, on) * 0.01).to(dtype);
  }
};

#ifdef LOWBIT_BENCH_TORCH_FUSED
// torch's fused step of `f` (Adam or AdamW) on p and its gradient, with its
// moments on p's device: at::_fused_adam_ / at::_fused_adamw_, what
// torch.optim's fused=True runs, with torch::optim's defaults (lr 1e-3, decay
// 1e-2 for AdamW). It moves 28 B/param: p, m, v read and written, g read.
class TorchFusedAdam {
 public:
  TorchFusedAdam(Family f, const torch::Tensor& p)
      : adamw_(f == Family::AdamW),
        p_{p.detach()},
        g_{p.grad()},
        m_{torch::zeros_like(p_[0])},
        v_{torch::zeros_like(p_[0])},
        steps_{torch::zeros({1}, p_[0].options())} {}
  void step() {
    if (adamw_)
      at::_fused_adamw_(p_, g_, m_, v_, {}, steps_, 1e-3, 0.9, 0.999, 1e-2, 1e-8, false, false);
    else
      at::_fused_adam_(p_, g_, m_, v_, {}, steps_, 1e-3, 0.9, 0.999, 0.0, 1e-8, false, false);
  }

 private:
  bool adamw_;
  std::vector<torch::Tensor> p_, g_, m_, v_, steps_;
};
#endif

// `be` null: the backend of p's device.
inline std::shared_ptr<optim::Optimizer8bit> lowbit_optimizer(
    Family f, const torch::Tensor& p, int64_t bits, std::shared_ptr<kernels::Backend> be = nullptr) {
  const std::vector<torch::Tensor> params{p};
  switch (f) {
    case Family::Adam:
      return std::make_shared<optim::Adam8bit>(params,
                                               optim::Adam8bitOptions(1e-3).optim_bits(bits), be);
    case Family::AdamW:
      return std::make_shared<optim::AdamW8bit>(params,
                                                optim::AdamW8bitOptions(1e-3).optim_bits(bits), be);
    case Family::RMSprop:
      return std::make_shared<optim::RMSprop8bit>(
          params, optim::RMSprop8bitOptions(1e-3).optim_bits(bits), be);
    case Family::Lion:
      return std::make_shared<optim::Lion8bit>(
          params, optim::Lion8bitOptions(1e-4).weight_decay(0.01).optim_bits(bits), be);
    case Family::LAMB:
      return std::make_shared<optim::LAMB8bit>(
          params, optim::LAMB8bitOptions(1e-3).weight_decay(0.01).optim_bits(bits), be);
  }
  return nullptr;
}

// Bytes a lowbit step must move per parameter of `elem` bytes: the gradient
// check reads g (not under SkipBlocks); the fused update reads p, g and the
// states and writes p and the states (8-bit: 1 byte each way per state plus
// absmax; 32-bit: 4); LAMB's norm pass reads p, g and the states once more.
inline double lowbit_bytes_per_param(Family f, int64_t bits, bool checked, double elem) {
  const int states = (f == Family::Lion || f == Family::RMSprop) ? 1 : 2;
  const double state = bits == 8 ? 1 + 4.0 / 256 : 4;
  double bytes = (checked ? elem : 0) + 3 * elem + 2 * states * state;
  if (f == Family::LAMB) bytes += 2 * elem + states * state;
  return bytes;
}

// Problem sizes by name: `all`, or those LOWBIT_BENCH_SIZES names (e.g.
// "16M,64M") for a quick run, which may also name sizes of `on_request`.
using Sizes = std::vector<std::pair<std::string, int64_t>>;
inline Sizes sizes_from_env(const Sizes& all, const Sizes& on_request = {}) {
  const char* only = std::getenv("LOWBIT_BENCH_SIZES");
  if (!only) return all;
  Sizes picked;
  std::stringstream ss(only);
  for (std::string item; std::getline(ss, item, ',');)
    for (const Sizes* list : {&all, &on_request})
      for (const auto& s : *list)
        if (s.first == item) picked.push_back(s);
  return picked;
}

}  // namespace lowbit::bench
