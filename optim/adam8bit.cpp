#include "optim/adam8bit.h"

#include <torch/optim/serialize.h>

#include "optim/hyperparameter_checks.h"

namespace lowbit::optim {
namespace {

const char* name_of(bool decoupled) { return decoupled ? "AdamW8bit" : "Adam8bit"; }

}  // namespace

template <bool kDecoupled>
void AdamFamily8bitOptions<kDecoupled>::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(betas);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(eps);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(amsgrad);
  this->state_settings().save(archive);
}

template <bool kDecoupled>
void AdamFamily8bitOptions<kDecoupled>::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(betas_t, betas);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, eps);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, amsgrad);
  this->state_settings().load(archive);
}

template <bool kDecoupled>
bool AdamFamily8bitOptions<kDecoupled>::operator==(const AdamFamily8bitOptions& o) const {
  return lr() == o.lr() && betas() == o.betas() && eps() == o.eps() &&
         weight_decay() == o.weight_decay() && amsgrad() == o.amsgrad() &&
         this->state_settings() == o.state_settings();
}

template <bool kDecoupled>
AdamFamily8bit<kDecoupled>::AdamFamily8bit(
    std::vector<torch::optim::OptimizerParamGroup> param_groups, Options defaults,
    std::shared_ptr<kernels::Backend> backend)
    : Optimizer8bit(name_of(kDecoupled), std::move(param_groups),
                    std::make_unique<Options>(defaults), std::move(backend)) {
  check_groups();
}

template <bool kDecoupled>
const StateSettings& AdamFamily8bit<kDecoupled>::settings(
    const torch::optim::OptimizerOptions& group) const {
  return static_cast<const Options&>(group).state_settings();
}

template <bool kDecoupled>
void AdamFamily8bit<kDecoupled>::check_options(const torch::optim::OptimizerOptions& group) const {
  const auto& o = static_cast<const Options&>(group);
  const char* name = name_of(kDecoupled);
  check_non_negative(name, "learning rate", o.lr());
  check_non_negative(name, "epsilon", o.eps());
  check_beta(name, "betas[0]", std::get<0>(o.betas()));
  check_beta(name, "betas[1]", std::get<1>(o.betas()));
  check_non_negative(name, "weight_decay", o.weight_decay());
  TORCH_CHECK(!o.amsgrad(), name,
              ": amsgrad is not supported with 8-bit states (bitsandbytes "
              "does not support it either); use torch::optim::",
              kDecoupled ? "AdamW" : "Adam");
}

template <bool kDecoupled>
kernels::StepHparams AdamFamily8bit<kDecoupled>::hparams(
    const torch::optim::OptimizerOptions& group) const {
  const auto& o = static_cast<const Options&>(group);
  kernels::StepHparams h{};
  h.rule = LB_RULE_ADAM;
  h.decoupled = kDecoupled;
  h.bias_correction = 1;  // libtorch's bias corrections, in double
  h.lr = o.lr();
  h.beta1 = std::get<0>(o.betas());
  h.beta2 = std::get<1>(o.betas());
  h.eps = o.eps();
  h.weight_decay = o.weight_decay();
  return h;
}

template struct AdamFamily8bitOptions<false>;
template struct AdamFamily8bitOptions<true>;
template class AdamFamily8bit<false>;
template class AdamFamily8bit<true>;

}  // namespace lowbit::optim
