#include "examples/train/optimizer_factory.h"

#include <sstream>
#include <tuple>
#include <type_traits>
#include <utility>

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include "lora/path_regex.h"
#include "optim/optim.h"

namespace lowbit::train {
namespace {

// Calls `visit` on each defined tensor of torch::optim's per-parameter states.
template <typename Visit>
void for_each_torch_state(torch::optim::Optimizer& optimizer, Visit visit) {
  auto each = [&](std::initializer_list<torch::Tensor*> tensors) {
    for (torch::Tensor* t : tensors) {
      if (t->defined()) visit(*t);
    }
  };
  for (auto& entry : optimizer.state()) {
    torch::optim::OptimizerParamState* s = entry.second.get();
    if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(s)) {
      each({&adam->exp_avg(), &adam->exp_avg_sq(), &adam->max_exp_avg_sq()});
    } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(s)) {
      each({&adamw->exp_avg(), &adamw->exp_avg_sq(), &adamw->max_exp_avg_sq()});
    } else if (auto* rms = dynamic_cast<torch::optim::RMSpropParamState*>(s)) {
      each({&rms->square_avg(), &rms->momentum_buffer(), &rms->grad_avg()});
    } else if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(s)) {
      each({&sgd->momentum_buffer()});
    }
  }
}

// Whether an options class has a getter `name()` (TORCH_ARG's getters).
#define LOWBIT_OPTION_TRAIT(name)                                                                 \
  template <typename O, typename = void>                                                          \
  struct has_##name : std::false_type {};                                                         \
  template <typename O>                                                                           \
  struct has_##name<O, std::void_t<decltype(std::declval<const O&>().name())>> : std::true_type { \
  };
LOWBIT_OPTION_TRAIT(betas)
LOWBIT_OPTION_TRAIT(eps)
LOWBIT_OPTION_TRAIT(momentum)
LOWBIT_OPTION_TRAIT(alpha)
#undef LOWBIT_OPTION_TRAIT

// The hyper-parameters options classes share (torch's and lowbit's spell
// them alike); each only where the options class has it.
template <typename Options>
void set_common(Options& o, const config::OptimizerRecipe& r, std::ostream& d) {
  if (r.lr) o.lr(*r.lr);
  d << " lr=" << o.lr();
  if constexpr (has_betas<Options>::value) {
    if (r.betas) o.betas(std::make_tuple((*r.betas)[0], (*r.betas)[1]));
    d << " betas=(" << std::get<0>(o.betas()) << ", " << std::get<1>(o.betas()) << ")";
  }
  if constexpr (has_eps<Options>::value) {
    if (r.eps) o.eps(*r.eps);
    d << " eps=" << o.eps();
  }
  if (r.weight_decay) o.weight_decay(*r.weight_decay);
  d << " weight_decay=" << o.weight_decay();
  if constexpr (has_momentum<Options>::value) {
    if (r.momentum) o.momentum(*r.momentum);
    d << " momentum=" << o.momentum();
  }
  if constexpr (has_alpha<Options>::value) {
    if (r.alpha) o.alpha(*r.alpha);
    d << " alpha=" << o.alpha();
  }
}

template <typename Optimizer, typename Options>
BuiltOptimizer torch_optimizer(const char* name, Options o, const config::OptimizerRecipe& r,
                               const std::vector<torch::Tensor>& params) {
  std::ostringstream d;
  d << "torch::optim::" << name;
  set_common(o, r, d);
  if constexpr (std::is_same_v<Options, torch::optim::AdamOptions> ||
                std::is_same_v<Options, torch::optim::AdamWOptions>) {
    if (r.amsgrad) o.amsgrad(*r.amsgrad);
    if (o.amsgrad()) d << " amsgrad";
  }
  if constexpr (std::is_same_v<Options, torch::optim::SGDOptions>) {
    if (r.nesterov) o.nesterov(*r.nesterov);
    if (o.nesterov()) d << " nesterov";
  }
  BuiltOptimizer built;
  built.optimizer = std::make_unique<Optimizer>(params, o);
  built.description = d.str();
  torch::optim::Optimizer* optimizer = built.optimizer.get();
  built.state_bytes = [optimizer] {
    int64_t total = 0;
    for_each_torch_state(*optimizer, [&](torch::Tensor& t) { total += int64_t(t.nbytes()); });
    return total;
  };
  built.skipped_steps = [] { return int64_t(0); };
  // torch::optim saves and loads its states where they are.
  built.move_states = [optimizer](torch::Device device) {
    for_each_torch_state(*optimizer, [&](torch::Tensor& t) { t = t.to(device); });
  };
  return built;
}

optim::NonFinitePolicy policy_of(const std::string& name) {
  if (name == "raise") return optim::NonFinitePolicy::Raise;
  if (name == "skip_blocks") return optim::NonFinitePolicy::SkipBlocks;
  TORCH_CHECK(name == "skip_step", "optimizer.nonfinite '", name, "' is unknown");
  return optim::NonFinitePolicy::SkipStep;
}

template <typename Optimizer, typename Options>
BuiltOptimizer eight_bit(const char* name, Options o, const config::OptimizerRecipe& r,
                         const std::vector<torch::Tensor>& params,
                         const std::vector<std::string>& names,
                         const std::shared_ptr<kernels::Backend>& backend) {
  std::ostringstream d;
  d << "lowbit::optim::" << name;
  set_common(o, r, d);
  if (r.optim_bits) o.optim_bits(*r.optim_bits);
  if (r.min_8bit_size) o.min_8bit_size(*r.min_8bit_size);
  if (r.block_size) o.block_size(*r.block_size);
  if (r.percentile_clipping) o.percentile_clipping(*r.percentile_clipping);
  if (r.max_unorm) o.max_unorm(*r.max_unorm);
  d << " optim_bits=" << o.optim_bits() << " block_size=" << o.block_size()
    << " min_8bit_size=" << o.min_8bit_size();
  if (o.percentile_clipping() < 100) d << " percentile_clipping=" << o.percentile_clipping();
  if (o.max_unorm() > 0) d << " max_unorm=" << o.max_unorm();
  auto optimizer = std::make_unique<Optimizer>(params, o, backend);
  optimizer->set_nonfinite_policy(policy_of(r.nonfinite.empty() ? "skip_step" : r.nonfinite));
  // bitsandbytes' GlobalOptimManager.override_config: these parameters keep
  // 32-bit states whatever their size.
  std::vector<lora::PathRegex> fp32;
  for (const std::string& pattern : r.fp32_params) {
    try {
      fp32.emplace_back(pattern);
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK(false, "optimizer.fp32_params: '", pattern, "' is not a valid regular expression (",
                  e.what(), ")");
    }
  }
  int kept = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    for (const lora::PathRegex& re : fp32) {
      if (re.search(names[i])) {
        optim::ParamOverride o32;
        o32.optim_bits = 32;
        optimizer->override_config(params[i], o32);
        ++kept;
        break;
      }
    }
  }
  TORCH_CHECK(r.fp32_params.empty() || kept > 0,
              "optimizer.fp32_params matches no trainable "
              "parameter");
  if (kept > 0) d << " (" << kept << " parameters kept at 32-bit states)";
  BuiltOptimizer built;
  const Optimizer* raw = optimizer.get();
  built.state_bytes = [raw] { return raw->state_bytes(); };
  built.skipped_steps = [raw] { return raw->nonfinite_stats().skipped_steps; };
  // States are saved as CPU tensors and loaded onto the parameters' device.
  built.move_states = [](torch::Device) {};
  built.optimizer = std::move(optimizer);
  built.description = d.str();
  return built;
}

}  // namespace

BuiltOptimizer make_optimizer(const config::OptimizerRecipe& r,
                              const std::vector<torch::Tensor>& params,
                              const std::vector<std::string>& names,
                              const std::shared_ptr<kernels::Backend>& backend) {
  TORCH_CHECK(!params.empty(), "the model has no trainable parameters for the optimizer");
  TORCH_CHECK(names.size() == params.size(), "make_optimizer: ", names.size(), " names for ",
              params.size(), " parameters");
  const std::string& n = r.name;
  if (n == "adam8bit")
    return eight_bit<optim::Adam8bit>("Adam8bit", optim::Adam8bitOptions(), r, params, names,
                                      backend);
  if (n == "adamw8bit")
    return eight_bit<optim::AdamW8bit>("AdamW8bit", optim::AdamW8bitOptions(), r, params, names,
                                       backend);
  if (n == "lion8bit")
    return eight_bit<optim::Lion8bit>("Lion8bit", optim::Lion8bitOptions(), r, params, names,
                                      backend);
  if (n == "lamb8bit")
    return eight_bit<optim::LAMB8bit>("LAMB8bit", optim::LAMB8bitOptions(), r, params, names,
                                      backend);
  if (n == "rmsprop8bit")
    return eight_bit<optim::RMSprop8bit>("RMSprop8bit", optim::RMSprop8bitOptions(), r, params,
                                         names, backend);
  if (n == "adam")
    return torch_optimizer<torch::optim::Adam>("Adam", torch::optim::AdamOptions(), r, params);
  if (n == "adamw")
    return torch_optimizer<torch::optim::AdamW>("AdamW", torch::optim::AdamWOptions(), r, params);
  if (n == "rmsprop")
    return torch_optimizer<torch::optim::RMSprop>("RMSprop", torch::optim::RMSpropOptions(), r,
                                                  params);
  TORCH_CHECK(n == "sgd", "optimizer.name '", n, "' is unknown");
  TORCH_CHECK(r.lr, "optimizer.lr is required for sgd");
  return torch_optimizer<torch::optim::SGD>("SGD", torch::optim::SGDOptions(*r.lr), r, params);
}

}  // namespace lowbit::train
