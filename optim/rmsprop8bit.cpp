#include "optim/rmsprop8bit.h"

#include <torch/optim/serialize.h>

#include "optim/hyperparameter_checks.h"

namespace lowbit::optim {

void RMSprop8bitOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(alpha);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(eps);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(centered);
  state_settings().save(archive);
}

void RMSprop8bitOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, alpha);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, eps);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, momentum);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, centered);
  state_settings().load(archive);
}

bool RMSprop8bitOptions::operator==(const RMSprop8bitOptions& o) const {
  return lr() == o.lr() && alpha() == o.alpha() && eps() == o.eps() &&
         weight_decay() == o.weight_decay() && momentum() == o.momentum() &&
         centered() == o.centered() && state_settings() == o.state_settings();
}

RMSprop8bit::RMSprop8bit(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                         Options defaults, std::shared_ptr<kernels::Backend> backend)
    : Optimizer8bit("RMSprop8bit", std::move(param_groups), std::make_unique<Options>(defaults),
                    std::move(backend)) {
  check_groups();
}

const StateSettings& RMSprop8bit::settings(const torch::optim::OptimizerOptions& group) const {
  return static_cast<const Options&>(group).state_settings();
}

void RMSprop8bit::check_options(const torch::optim::OptimizerOptions& group) const {
  const auto& o = static_cast<const Options&>(group);
  check_non_negative("RMSprop8bit", "learning rate", o.lr());
  check_non_negative("RMSprop8bit", "epsilon", o.eps());
  check_beta("RMSprop8bit", "alpha", o.alpha());
  check_non_negative("RMSprop8bit", "momentum", o.momentum());
  check_non_negative("RMSprop8bit", "weight_decay", o.weight_decay());
  TORCH_CHECK(!o.centered(),
              "RMSprop8bit: centered RMSprop is not supported with 8-bit states "
              "(bitsandbytes does not support it either); use torch::optim::RMSprop");
}

bool RMSprop8bit::has_state2(const torch::optim::OptimizerOptions& group) const {
  return static_cast<const Options&>(group).momentum() > 0;
}

kernels::StepHparams RMSprop8bit::hparams(const torch::optim::OptimizerOptions& group) const {
  const auto& o = static_cast<const Options&>(group);
  kernels::StepHparams h{};
  h.rule = LB_RULE_RMSPROP;
  h.lr = o.lr();
  h.beta1 = o.alpha();
  h.beta2 = o.momentum();
  h.eps = o.eps();
  h.weight_decay = o.weight_decay();
  return h;
}

}  // namespace lowbit::optim
