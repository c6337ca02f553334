// Eval mode and no gradients for the length of one evaluation; the module's
// training mode comes back afterwards.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

namespace lowbit::train {

class EvalScope {
 public:
  explicit EvalScope(torch::nn::Module& m) : module_(m), was_training_(m.is_training()) {
    module_.eval();
  }
  ~EvalScope() { module_.train(was_training_); }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  torch::nn::Module& module_;
  bool was_training_;
  torch::NoGradGuard no_grad_;
};

}  // namespace lowbit::train
