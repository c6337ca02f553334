// RMSNorm (Zhang & Sennrich 2019) as Hugging Face's LlamaRMSNorm computes it:
// x / sqrt(mean(x^2) + eps) in float32, cast back to x's dtype, then scaled by
// the weight.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace lowbit::nn {

class RMSNormImpl : public torch::nn::Module {
 public:
  // `weight` [hidden] becomes the parameter "weight".
  RMSNormImpl(torch::Tensor weight, double eps);
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

}  // namespace lowbit::nn
