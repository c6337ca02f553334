#include "nn/activation_checkpoint.h"

#include <mutex>

#include <ATen/Context.h>
#include <torch/autograd.h>
#include <torch/custom_class.h>

namespace lowbit::nn {
namespace {

// What backward needs to rerun the function: the function itself and the
// random state of the device it ran on. Rides in the autograd context's
// saved_data (an IValue), hence a registered custom class.
class Recompute : public torch::CustomClassHolder {
 public:
  Recompute(std::function<torch::Tensor(const torch::Tensor&)> fn, const torch::Device& device)
      : fn_(std::move(fn)), generator_(at::globalContext().defaultGenerator(device)) {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    rng_state_ = generator_.get_state();
  }

  torch::Tensor first_run(const torch::Tensor& x) const { return fn_(x); }

  // Reruns fn with the first run's random state, then puts back the state
  // the rest of the program had reached.
  torch::Tensor rerun(const torch::Tensor& x) const {
    torch::Tensor current;
    {
      std::lock_guard<std::mutex> lock(generator_.mutex());
      current = generator_.get_state();
      generator_.set_state(rng_state_);
    }
    torch::Tensor y;
    try {
      y = fn_(x);
    } catch (...) {
      restore(current);
      throw;
    }
    restore(current);
    return y;
  }

 private:
  void restore(const torch::Tensor& state) const {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    generator_.set_state(state);
  }

  std::function<torch::Tensor(const torch::Tensor&)> fn_;
  mutable at::Generator generator_;
  torch::Tensor rng_state_;
};

const auto kRegistration = torch::class_<Recompute>("lowbit", "CheckpointRecompute");

struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               torch::TensorList params, c10::intrusive_ptr<Recompute> recompute) {
    ctx->save_for_backward({x});
    ctx->saved_data["recompute"] = recompute;
    ctx->saved_data["params"] = params.vec();
    // Function::apply runs forward with grad mode off: no graph is kept.
    return recompute->first_run(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const auto recompute = ctx->saved_data["recompute"].toCustomClass<Recompute>();
    const std::vector<torch::Tensor> params = ctx->saved_data["params"].toTensorVector();
    const torch::Tensor input = x.detach().requires_grad_(x.requires_grad());
    torch::Tensor y;
    {
      torch::AutoGradMode enable(true);
      y = recompute->rerun(input);
    }
    std::vector<torch::Tensor> wrt;
    if (input.requires_grad()) wrt.push_back(input);
    for (const torch::Tensor& p : params)
      if (p.requires_grad()) wrt.push_back(p);
    std::vector<torch::Tensor> grads;
    if (!wrt.empty() && y.requires_grad())
      grads = torch::autograd::grad({y}, wrt, {grad_out[0]}, /*retain_graph=*/false,
                                    /*create_graph=*/false, /*allow_unused=*/true);
    torch::autograd::variable_list out;
    size_t next = 0;
    auto take = [&](bool wanted) {
      return wanted && next < grads.size() ? grads[next++] : torch::Tensor();
    };
    out.push_back(take(input.requires_grad()));
    for (const torch::Tensor& p : params) out.push_back(take(p.requires_grad()));
    out.emplace_back();  // the Recompute argument
    return out;
  }
};

}  // namespace

torch::Tensor checkpointed(std::function<torch::Tensor(const torch::Tensor&)> fn,
                           const torch::Tensor& x, const std::vector<torch::Tensor>& params) {
  auto recompute = c10::make_intrusive<Recompute>(std::move(fn), x.device());
  return CheckpointFunction::apply(x, torch::TensorList(params), recompute);
}

}  // namespace lowbit::nn
