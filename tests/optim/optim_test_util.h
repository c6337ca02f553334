// Test support for the 8-bit optimizers: one factory over the five optimizers
// (8- or 32-bit states, any backend), reproducible random problems, and the
// checkpoint round trip through torch::serialize archives.
#pragma once

#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "optim/optim.h"

namespace lowbit::testing {

// The state `opt` keeps for parameter `p`.
inline const optim::QuantizedParamState& state_of(const optim::Optimizer8bit& opt,
                                                  const torch::Tensor& p) {
  return static_cast<const optim::QuantizedParamState&>(*opt.state().at(optim::state_key(p)));
}

enum class Kind { Adam, AdamW, Lion, LAMB, RMSprop };

inline const std::vector<Kind>& all_kinds() {
  static const std::vector<Kind> kinds = {Kind::Adam, Kind::AdamW, Kind::Lion, Kind::LAMB,
                                          Kind::RMSprop};
  return kinds;
}

inline std::string kind_name(Kind k) {
  switch (k) {
    case Kind::Adam: return "Adam8bit";
    case Kind::AdamW: return "AdamW8bit";
    case Kind::Lion: return "Lion8bit";
    case Kind::LAMB: return "LAMB8bit";
    case Kind::RMSprop: return "RMSprop8bit";
  }
  return "?";
}

// Optional changes to an optimizer's options beyond the test's defaults.
struct Setup {
  int64_t optim_bits = 8;
  double lr = -1;  // < 0: the optimizer's default
  int64_t percentile_clipping = 100;
  double max_unorm = 0;
  double weight_decay = 0.01;
  double momentum = 0.9;  // RMSprop
  int64_t min_8bit_size = 4096;
};

inline std::unique_ptr<optim::Optimizer8bit> make_optimizer(
    Kind kind, std::vector<torch::Tensor> params, const Setup& s = {},
    std::shared_ptr<kernels::Backend> backend = nullptr) {
  const auto common = [&](auto& o) {
    o.optim_bits(s.optim_bits)
        .percentile_clipping(s.percentile_clipping)
        .max_unorm(s.max_unorm)
        .min_8bit_size(s.min_8bit_size);
    if (s.lr >= 0) o.lr(s.lr);
    o.weight_decay(s.weight_decay);
  };
  switch (kind) {
    case Kind::Adam: {
      optim::Adam8bitOptions o;
      common(o);
      return std::make_unique<optim::Adam8bit>(params, o, backend);
    }
    case Kind::AdamW: {
      optim::AdamW8bitOptions o;
      common(o);
      return std::make_unique<optim::AdamW8bit>(params, o, backend);
    }
    case Kind::Lion: {
      optim::Lion8bitOptions o;
      common(o);
      return std::make_unique<optim::Lion8bit>(params, o, backend);
    }
    case Kind::LAMB: {
      optim::LAMB8bitOptions o;
      common(o);
      return std::make_unique<optim::LAMB8bit>(params, o, backend);
    }
    case Kind::RMSprop: {
      optim::RMSprop8bitOptions o;
      common(o);
      o.momentum(s.momentum);
      return std::make_unique<optim::RMSprop8bit>(params, o, backend);
    }
  }
  return nullptr;
}

// Parameters of a few shapes: one below min_8bit_size (float32 states), two
// above it with a short last block.
inline std::vector<torch::Tensor> make_params(uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> params = {torch::randn({64, 80}) * 0.1, torch::randn({37}) * 0.1,
                                       torch::randn({5000}) * 0.1};
  for (auto& p : params) p.set_requires_grad(true);
  return params;
}

inline std::vector<torch::Tensor> clone_params(const std::vector<torch::Tensor>& params,
                                               torch::Device device = torch::kCPU) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params)
    out.push_back(p.detach()
                      .to(torch::TensorOptions().device(device), /*non_blocking=*/false,
                          /*copy=*/true)
                      .set_requires_grad(true));
  return out;
}

// The gradient of step `step` for `params`: deterministic in (seed, step),
// 0.01 * N(0, 1) as in bitsandbytes' optimizer tests; drawn on the CPU, so
// parameters on any device get the same values.
inline void set_grads(const std::vector<torch::Tensor>& params, uint64_t seed, int step) {
  torch::manual_seed(seed * 1000003 + uint64_t(step));
  for (const auto& p : params) p.mutable_grad() = (torch::randn(p.sizes()) * 0.01).to(p.device());
}

inline std::string save_to_string(const torch::optim::Optimizer& opt) {
  torch::serialize::OutputArchive archive;
  opt.save(archive);
  std::ostringstream os;
  archive.save_to(os);
  return os.str();
}

inline void load_from_string(torch::optim::Optimizer& opt, const std::string& bytes) {
  torch::serialize::InputArchive archive;
  std::istringstream is(bytes);
  archive.load_from(is);
  opt.load(archive);
}

// max |a - b| / max |b| over a list of tensors.
inline double max_relative_error(const std::vector<torch::Tensor>& a,
                                 const std::vector<torch::Tensor>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const torch::Tensor x = a[i].detach().cpu().to(torch::kFloat64);
    const torch::Tensor y = b[i].detach().cpu().to(torch::kFloat64);
    diff = std::max(diff, (x - y).abs().max().item<double>());
    scale = std::max(scale, y.abs().max().item<double>());
  }
  return diff / scale;
}

}  // namespace lowbit::testing
