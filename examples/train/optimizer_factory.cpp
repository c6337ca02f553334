#include "examples/train/optimizer_factory.h"

#include <sstream>
#include <tuple>

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

namespace lowbit::train {
namespace {

int64_t bytes_of(std::initializer_list<torch::Tensor> tensors) {
  int64_t total = 0;
  for (const torch::Tensor& t : tensors) {
    if (t.defined()) total += int64_t(t.nbytes());
  }
  return total;
}

// Sums the tensors of torch::optim's per-parameter states.
int64_t torch_state_bytes(torch::optim::Optimizer& optimizer) {
  int64_t total = 0;
  for (const auto& entry : optimizer.state()) {
    const torch::optim::OptimizerParamState* s = entry.second.get();
    if (auto* adam = dynamic_cast<const torch::optim::AdamParamState*>(s)) {
      total += bytes_of({adam->exp_avg(), adam->exp_avg_sq(), adam->max_exp_avg_sq()});
    } else if (auto* adamw = dynamic_cast<const torch::optim::AdamWParamState*>(s)) {
      total += bytes_of({adamw->exp_avg(), adamw->exp_avg_sq(), adamw->max_exp_avg_sq()});
    } else if (auto* rms = dynamic_cast<const torch::optim::RMSpropParamState*>(s)) {
      total += bytes_of({rms->square_avg(), rms->momentum_buffer(), rms->grad_avg()});
    } else if (auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(s)) {
      total += bytes_of({sgd->momentum_buffer()});
    }
  }
  return total;
}

template <typename Options>
void set_betas(Options& o, const config::OptimizerRecipe& r) {
  if (r.betas) o.betas(std::make_tuple((*r.betas)[0], (*r.betas)[1]));
}

BuiltOptimizer torch_optimizer(const config::OptimizerRecipe& r,
                               const std::vector<torch::Tensor>& params) {
  BuiltOptimizer built;
  std::ostringstream d;
  if (r.name == "adam" || r.name == "adamw") {
    auto configure = [&](auto options) {
      if (r.lr) options.lr(*r.lr);
      set_betas(options, r);
      if (r.eps) options.eps(*r.eps);
      if (r.weight_decay) options.weight_decay(*r.weight_decay);
      if (r.amsgrad) options.amsgrad(*r.amsgrad);
      d << " lr=" << options.lr() << " betas=(" << std::get<0>(options.betas()) << ", "
        << std::get<1>(options.betas()) << ") eps=" << options.eps()
        << " weight_decay=" << options.weight_decay();
      return options;
    };
    if (r.name == "adam") {
      built.optimizer = std::make_unique<torch::optim::Adam>(params, configure(torch::optim::AdamOptions()));
      built.description = "torch::optim::Adam" + d.str();
    } else {
      built.optimizer =
          std::make_unique<torch::optim::AdamW>(params, configure(torch::optim::AdamWOptions()));
      built.description = "torch::optim::AdamW" + d.str();
    }
  } else if (r.name == "rmsprop") {
    torch::optim::RMSpropOptions o;
    if (r.lr) o.lr(*r.lr);
    if (r.alpha) o.alpha(*r.alpha);
    if (r.eps) o.eps(*r.eps);
    if (r.weight_decay) o.weight_decay(*r.weight_decay);
    if (r.momentum) o.momentum(*r.momentum);
    d << "torch::optim::RMSprop lr=" << o.lr() << " alpha=" << o.alpha() << " eps=" << o.eps()
      << " weight_decay=" << o.weight_decay() << " momentum=" << o.momentum();
    built.optimizer = std::make_unique<torch::optim::RMSprop>(params, o);
    built.description = d.str();
  } else {
    TORCH_CHECK(r.name == "sgd", "optimizer.name '", r.name, "' is unknown");
    TORCH_CHECK(r.lr, "optimizer.lr is required for sgd");
    torch::optim::SGDOptions o(*r.lr);
    if (r.momentum) o.momentum(*r.momentum);
    if (r.weight_decay) o.weight_decay(*r.weight_decay);
    if (r.nesterov) o.nesterov(*r.nesterov);
    d << "torch::optim::SGD lr=" << o.lr() << " momentum=" << o.momentum()
      << " weight_decay=" << o.weight_decay() << " nesterov=" << o.nesterov();
    built.optimizer = std::make_unique<torch::optim::SGD>(params, o);
    built.description = d.str();
  }
  torch::optim::Optimizer* optimizer = built.optimizer.get();
  built.state_bytes = [optimizer] { return torch_state_bytes(*optimizer); };
  return built;
}

}  // namespace

BuiltOptimizer make_optimizer(const config::OptimizerRecipe& recipe,
                              const std::vector<torch::Tensor>& params,
                              kernels::Backend& backend) {
  TORCH_CHECK(!params.empty(), "the model has no trainable parameters for the optimizer");
  (void)backend;
  if (recipe.name == "adam" || recipe.name == "adamw" || recipe.name == "rmsprop" ||
      recipe.name == "sgd") {
    return torch_optimizer(recipe, params);
  }
  throw config::RecipeError("optimizer.name: " + recipe.name +
                            " needs the 8-bit optimizers of optim/ (issue 4), which this build "
                            "does not have yet; allowed now: adam, adamw, rmsprop, sgd");
}

}  // namespace lowbit::train
