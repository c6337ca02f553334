// Linear-like layers (torch::nn::Linear, lora::Linear4bit, lora::Linear8bit,
// lora::LoraLinear, and lowbit::nn::Linear holding any of them) called by
// child name, so a layer replaced through the module registry
// (quantize_model, apply_lora) is the one that runs. Models that keep typed
// members declare them as lowbit::nn::Linear (nn/linear.h) instead, which
// those functions change in place.
#pragma once

#include <cstdint>
#include <string>

#include <torch/nn/module.h>
#include <torch/types.h>

namespace lowbit::nn {

// y = child `name` of `parent` applied to x. Any child other than the
// linear-like layers throws naming the child and its type.
torch::Tensor forward_linear(torch::nn::Module& parent, const std::string& name,
                             const torch::Tensor& x);
// y = `layer` (a linear-like layer) applied to x.
torch::Tensor forward_linear(torch::nn::Module& layer, const torch::Tensor& x);

// A linear-like layer's effective dense weight [out, in] and bias (undefined
// when it has none), detached: a Linear's own, a Linear4bit's dequantized, a
// LoraLinear's base plus its adapter's delta unless merged. Throws for other
// modules.
struct DenseLinear {
  torch::Tensor weight;
  torch::Tensor bias;
};
DenseLinear dense_linear(torch::nn::Module& module);

// Whether `module` is one of the linear-like layers.
bool is_linear_like(const torch::nn::Module& module);

// A linear-like layer's in and out features and whether it has a bias.
struct LinearShape {
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = false;
};
LinearShape linear_shape(torch::nn::Module& module);

}  // namespace lowbit::nn
