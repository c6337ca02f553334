// Adam8bit and AdamW8bit: drop-in replacements for torch::optim::Adam and
// AdamW with blockwise 8-bit states (bitsandbytes' Adam8bit / AdamW8bit). One
// family: Adam adds weight_decay * p to the gradient (torch's Adam), AdamW
// decays p by 1 - lr * weight_decay before the step (torch's AdamW order;
// bitsandbytes' CUDA kernel decays after it).
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

template <bool kDecoupled>
struct AdamFamily8bitOptions
    : public torch::optim::OptimizerCloneableOptions<AdamFamily8bitOptions<kDecoupled>>,
      public StateOptions<AdamFamily8bitOptions<kDecoupled>> {
  AdamFamily8bitOptions(double lr = 1e-3) : lr_(lr) {}
  TORCH_ARG(double, lr) = 1e-3;
  typedef std::tuple<double, double> betas_t;
  TORCH_ARG(betas_t, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-8;
  // torch's defaults: 0 for Adam, 1e-2 for AdamW.
  TORCH_ARG(double, weight_decay) = kDecoupled ? 1e-2 : 0.0;
  // Accepted for source compatibility with torch's options; true is refused
  // (bitsandbytes does not implement AMSGrad for 8-bit states either).
  TORCH_ARG(bool, amsgrad) = false;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
  bool operator==(const AdamFamily8bitOptions& o) const;
};

template <bool kDecoupled>
class AdamFamily8bit : public Optimizer8bit {
 public:
  using Options = AdamFamily8bitOptions<kDecoupled>;

  explicit AdamFamily8bit(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                          Options defaults = {},
                          std::shared_ptr<kernels::Backend> backend = nullptr);
  explicit AdamFamily8bit(std::vector<torch::Tensor> params, Options defaults = {},
                          std::shared_ptr<kernels::Backend> backend = nullptr)
      : AdamFamily8bit({torch::optim::OptimizerParamGroup(std::move(params))}, defaults,
                       std::move(backend)) {}

  void save(torch::serialize::OutputArchive& archive) const override { save_as<Options>(archive); }
  void load(torch::serialize::InputArchive& archive) override { load_as<Options>(archive); }

 protected:
  kernels::OptimizerRule rule() const override { return kernels::OptimizerRule::Adam; }
  const StateSettings& settings(const torch::optim::OptimizerOptions& group) const override;
  void check_options(const torch::optim::OptimizerOptions& group) const override;
  bool has_state2(const torch::optim::OptimizerOptions&) const override { return true; }
  kernels::StepHparams hparams(const torch::optim::OptimizerOptions& group) const override;
};

using Adam8bitOptions = AdamFamily8bitOptions<false>;
using AdamW8bitOptions = AdamFamily8bitOptions<true>;
using Adam8bit = AdamFamily8bit<false>;
using AdamW8bit = AdamFamily8bit<true>;

extern template struct AdamFamily8bitOptions<false>;
extern template struct AdamFamily8bitOptions<true>;
extern template class AdamFamily8bit<false>;
extern template class AdamFamily8bit<true>;

}  // namespace lowbit::optim
