#include "nn/rms_norm.h"

namespace lowbit::nn {

RMSNormImpl::RMSNormImpl(torch::Tensor weight_, double eps_) : eps(eps_) {
  TORCH_CHECK(weight_.dim() == 1, "RMSNorm: weight must be 1-D, got ", weight_.sizes());
  weight = register_parameter("weight", weight_);
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  // transformers' LlamaRMSNorm: the statistics in float32 whatever the
  // activations' dtype, the cast back before the weight multiplies.
  const torch::Tensor h = x.to(torch::kFloat32);
  const torch::Tensor normed = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

}  // namespace lowbit::nn
