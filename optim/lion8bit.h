// Lion8bit: Lion (Chen et al. 2023, "Symbolic Discovery of Optimization
// Algorithms") with a blockwise 8-bit momentum, bitsandbytes' Lion8bit:
// p *= 1 - lr * wd; p -= lr * sign(b1 m + (1 - b1) g); m = b2 m + (1 - b2) g.
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

struct Lion8bitOptions : public torch::optim::OptimizerCloneableOptions<Lion8bitOptions>,
                         public StateOptions<Lion8bitOptions> {
  Lion8bitOptions(double lr = 1e-4) : lr_(lr) {}
  TORCH_ARG(double, lr) = 1e-4;
  typedef std::tuple<double, double> betas_t;
  TORCH_ARG(betas_t, betas) = std::make_tuple(0.9, 0.99);
  // Decoupled, as in the paper.
  TORCH_ARG(double, weight_decay) = 0.0;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
  bool operator==(const Lion8bitOptions& o) const;
};

class Lion8bit : public Optimizer8bit {
 public:
  using Options = Lion8bitOptions;

  explicit Lion8bit(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                    Options defaults = {}, std::shared_ptr<kernels::Backend> backend = nullptr);
  explicit Lion8bit(std::vector<torch::Tensor> params, Options defaults = {},
                    std::shared_ptr<kernels::Backend> backend = nullptr)
      : Lion8bit({torch::optim::OptimizerParamGroup(std::move(params))}, defaults,
                 std::move(backend)) {}

  void save(torch::serialize::OutputArchive& archive) const override { save_as<Options>(archive); }
  void load(torch::serialize::InputArchive& archive) override { load_as<Options>(archive); }

 protected:
  kernels::OptimizerRule rule() const override { return kernels::OptimizerRule::Lion; }
  const StateSettings& settings(const torch::optim::OptimizerOptions& group) const override;
  void check_options(const torch::optim::OptimizerOptions& group) const override;
  bool has_state2(const torch::optim::OptimizerOptions&) const override { return false; }
  kernels::StepHparams hparams(const torch::optim::OptimizerOptions& group) const override;
};

}  // namespace lowbit::optim
