// RMSprop8bit: torch::optim::RMSprop with a blockwise 8-bit square average
// (and momentum buffer), bitsandbytes' RMSprop8bit: s = alpha s + (1 - alpha)
// g^2; p -= lr * g / (sqrt(s) + eps), or with momentum b = momentum * b +
// g / (sqrt(s) + eps), p -= lr * b. weight_decay adds wd * p to g (torch).
// centered = true is refused, as in bitsandbytes.
#pragma once

#include <memory>
#include <vector>

#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include "optim/optimizer8bit.h"
#include "optim/state_options.h"

namespace lowbit::optim {

struct RMSprop8bitOptions : public torch::optim::OptimizerCloneableOptions<RMSprop8bitOptions>,
                            public StateOptions<RMSprop8bitOptions> {
  RMSprop8bitOptions(double lr = 1e-2) : lr_(lr) {}
  TORCH_ARG(double, lr) = 1e-2;
  TORCH_ARG(double, alpha) = 0.99;
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0.0;
  TORCH_ARG(double, momentum) = 0.0;
  TORCH_ARG(bool, centered) = false;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
  bool operator==(const RMSprop8bitOptions& o) const;
};

class RMSprop8bit : public Optimizer8bit {
 public:
  using Options = RMSprop8bitOptions;

  explicit RMSprop8bit(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                       Options defaults = {}, std::shared_ptr<kernels::Backend> backend = nullptr);
  explicit RMSprop8bit(std::vector<torch::Tensor> params, Options defaults = {},
                       std::shared_ptr<kernels::Backend> backend = nullptr)
      : RMSprop8bit({torch::optim::OptimizerParamGroup(std::move(params))}, defaults,
                    std::move(backend)) {}

  void save(torch::serialize::OutputArchive& archive) const override { save_as<Options>(archive); }
  void load(torch::serialize::InputArchive& archive) override { load_as<Options>(archive); }

 protected:
  kernels::OptimizerRule rule() const override { return kernels::OptimizerRule::RMSprop; }
  const StateSettings& settings(const torch::optim::OptimizerOptions& group) const override;
  void check_options(const torch::optim::OptimizerOptions& group) const override;
  // The momentum buffer exists when momentum > 0 (torch creates it then too).
  bool has_state2(const torch::optim::OptimizerOptions& group) const override;
  kernels::StepHparams hparams(const torch::optim::OptimizerOptions& group) const override;
};

}  // namespace lowbit::optim
