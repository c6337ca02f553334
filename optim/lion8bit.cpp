#include "optim/lion8bit.h"

#include <torch/optim/serialize.h>

#include "optim/hyperparameter_checks.h"

namespace lowbit::optim {

void Lion8bitOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(betas);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  state_settings().save(archive);
}

void Lion8bitOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(betas_t, betas);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  state_settings().load(archive);
}

bool Lion8bitOptions::operator==(const Lion8bitOptions& o) const {
  return lr() == o.lr() && betas() == o.betas() && weight_decay() == o.weight_decay() &&
         state_settings() == o.state_settings();
}

Lion8bit::Lion8bit(std::vector<torch::optim::OptimizerParamGroup> param_groups, Options defaults,
                   std::shared_ptr<kernels::Backend> backend)
    : Optimizer8bit("Lion8bit", std::move(param_groups), std::make_unique<Options>(defaults),
                    std::move(backend)) {
  check_groups();
}

const StateSettings& Lion8bit::settings(const torch::optim::OptimizerOptions& group) const {
  return static_cast<const Options&>(group).state_settings();
}

void Lion8bit::check_options(const torch::optim::OptimizerOptions& group) const {
  const auto& o = static_cast<const Options&>(group);
  check_non_negative("Lion8bit", "learning rate", o.lr());
  check_beta("Lion8bit", "betas[0]", std::get<0>(o.betas()));
  check_beta("Lion8bit", "betas[1]", std::get<1>(o.betas()));
  check_non_negative("Lion8bit", "weight_decay", o.weight_decay());
}

kernels::StepHparams Lion8bit::hparams(const torch::optim::OptimizerOptions& group) const {
  const auto& o = static_cast<const Options&>(group);
  kernels::StepHparams h{};
  h.rule = LB_RULE_LION;
  h.decoupled = 1;
  h.lr = o.lr();
  h.beta1 = std::get<0>(o.betas());
  h.beta2 = std::get<1>(o.betas());
  h.weight_decay = o.weight_decay();
  return h;
}

}  // namespace lowbit::optim
