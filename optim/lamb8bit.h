// LAMB8bit: LAMB (You et al. 2019, "Large Batch Optimization for Deep
// Learning", Algorithm 2) with blockwise 8-bit moments. Per parameter tensor:
// u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p and
// p -= lr * phi(||p||) / ||u|| * u, phi(x) = min(x, clamp_value) (the trust
// ratio is 1 when either norm is 0). bitsandbytes' LAMB only caps the update
// norm (max_unorm = 1); here that cap stays available as max_unorm.
#pragma once

#include <memory>
#include <tuple>
#include <vector>

#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include "optim/optimizer8bit.h"
#include "optim/state_options.h"

namespace lowbit::optim {

struct LAMB8bitOptions : public torch::optim::OptimizerCloneableOptions<LAMB8bitOptions>,
                         public StateOptions<LAMB8bitOptions> {
  LAMB8bitOptions(double lr = 1e-3) : lr_(lr) {}
  TORCH_ARG(double, lr) = 1e-3;
  typedef std::tuple<double, double> betas_t;
  TORCH_ARG(betas_t, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-6;
  TORCH_ARG(double, weight_decay) = 0.0;
  // Divide the moments by 1 - beta^t (the paper's m_hat, v_hat).
  TORCH_ARG(bool, bias_correction) = true;
  // Upper clamp of ||p|| in the trust ratio (the paper's phi; 10 as in
  // torch-optimizer's Lamb).
  TORCH_ARG(double, clamp_value) = 10.0;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
  bool operator==(const LAMB8bitOptions& o) const;
};

class LAMB8bit : public Optimizer8bit {
 public:
  using Options = LAMB8bitOptions;

  explicit LAMB8bit(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                    Options defaults = {}, std::shared_ptr<kernels::Backend> backend = nullptr);
  explicit LAMB8bit(std::vector<torch::Tensor> params, Options defaults = {},
                    std::shared_ptr<kernels::Backend> backend = nullptr)
      : LAMB8bit({torch::optim::OptimizerParamGroup(std::move(params))}, defaults,
                 std::move(backend)) {}

  void save(torch::serialize::OutputArchive& archive) const override { save_as<Options>(archive); }
  void load(torch::serialize::InputArchive& archive) override { load_as<Options>(archive); }

 protected:
  kernels::OptimizerRule rule() const override { return kernels::OptimizerRule::LAMB; }
  const StateSettings& settings(const torch::optim::OptimizerOptions& group) const override;
  void check_options(const torch::optim::OptimizerOptions& group) const override;
  bool has_state2(const torch::optim::OptimizerOptions&) const override { return true; }
  kernels::StepHparams hparams(const torch::optim::OptimizerOptions& group) const override;
};

}  // namespace lowbit::optim
