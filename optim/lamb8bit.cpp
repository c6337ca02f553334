#include "optim/lamb8bit.h"

#include <algorithm>
#include <cmath>

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

kernels::OptimizerArgs LAMB8bit::step_args(const torch::optim::OptimizerOptions& group,
                                           int64_t step, double lr_scale) const {
  const auto& o = static_cast<const Options&>(group);
  const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
  const double c1 = o.bias_correction() ? 1 - std::pow(beta1, double(step)) : 1.0;
  const double sqrt_c2 = o.bias_correction() ? std::sqrt(1 - std::pow(beta2, double(step))) : 1.0;
  kernels::OptimizerArgs a{};
  a.beta1 = float(beta1);
  a.one_minus_beta1 = float(1 - beta1);
  a.beta2 = float(beta2);
  a.one_minus_beta2 = float(1 - beta2);
  a.eps = float(o.eps() * sqrt_c2);
  a.l2 = float(o.weight_decay());
  a.decay = 1.0f;
  a.lr_step = float(-o.lr() * lr_scale);
  a.m_scale = float(sqrt_c2 / c1);
  return a;
}

double LAMB8bit::trust_ratio(const torch::optim::OptimizerOptions& group, double param_norm,
                             double update_norm) const {
  const double phi = std::min(param_norm, static_cast<const Options&>(group).clamp_value());
  return phi > 0 && update_norm > 0 && std::isfinite(update_norm) ? phi / update_norm : 1.0;
}

}  // namespace lowbit::optim
