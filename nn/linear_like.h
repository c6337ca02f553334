// Calls a model's linear layers by child name, so a layer replaced in place
// through `replace_module` (QLoRA's Linear4bit / LoraLinear swapping a
// torch::nn::Linear) is the one that runs. Models in examples/ keep no typed
// member for their linears: a stale member would run the old layer and keep its
// fp32 weight alive.
#pragma once

#include <string>

#include <torch/nn/module.h>
#include <torch/types.h>

namespace lowbit::models {

// y = child `name` of `parent` applied to x. The child must be a
// torch::nn::Linear or one of the linear-like layers listed in the .cpp;
// anything else throws naming the child and its type.
torch::Tensor forward_linear(torch::nn::Module& parent, const std::string& name,
                             const torch::Tensor& x);

}  // namespace lowbit::models
