#include "optim/lamb8bit.h"

#include <torch/optim/serialize.h>

#include "optim/hyperparameter_checks.h"

namespace lowbit::optim {

void LAMB8bitOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(betas);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(eps);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(bias_correction);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(clamp_value);
  state_settings().save(archive);
}

void LAMB8bitOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(betas_t, betas);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, eps);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, bias_correction);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, clamp_value);
  state_settings().load(archive);
}

bool LAMB8bitOptions::operator==(const LAMB8bitOptions& o) const {
  return lr() == o.lr() && betas() == o.betas() && eps() == o.eps() &&
         weight_decay() == o.weight_decay() && bias_correction() == o.bias_correction() &&
         clamp_value() == o.clamp_value() && state_settings() == o.state_settings();
}

LAMB8bit::LAMB8bit(std::vector<torch::optim::OptimizerParamGroup> param_groups, Options defaults,
                   std::shared_ptr<kernels::Backend> backend)
    : Optimizer8bit("LAMB8bit", std::move(param_groups), std::make_unique<Options>(defaults),
                    std::move(backend)) {
  check_groups();
}

const StateSettings& LAMB8bit::settings(const torch::optim::OptimizerOptions& group) const {
  return static_cast<const Options&>(group).state_settings();
}

void LAMB8bit::check_options(const torch::optim::OptimizerOptions& group) const {
  const auto& o = static_cast<const Options&>(group);
  check_non_negative("LAMB8bit", "learning rate", o.lr());
  check_non_negative("LAMB8bit", "epsilon", o.eps());
  check_beta("LAMB8bit", "betas[0]", std::get<0>(o.betas()));
  check_beta("LAMB8bit", "betas[1]", std::get<1>(o.betas()));
  check_non_negative("LAMB8bit", "weight_decay", o.weight_decay());
  TORCH_CHECK(o.clamp_value() > 0, "LAMB8bit: invalid clamp_value ", o.clamp_value(),
              "; expected a value > 0");
}

kernels::StepHparams LAMB8bit::hparams(const torch::optim::OptimizerOptions& group) const {
  const auto& o = static_cast<const Options&>(group);
  kernels::StepHparams h{};
  h.rule = LB_RULE_LAMB;
  h.bias_correction = o.bias_correction();
  h.lr = o.lr();
  h.beta1 = std::get<0>(o.betas());
  h.beta2 = std::get<1>(o.betas());
  h.eps = o.eps();
  h.weight_decay = o.weight_decay();
  h.clamp_value = o.clamp_value();
  return h;
}

}  // namespace lowbit::optim
