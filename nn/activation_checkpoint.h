// Activation checkpointing (Chen et al. 2016, "Training Deep Nets with
// Sublinear Memory Cost"; torch.utils.checkpoint in Python, which libtorch's
// C++ API lacks): a function's intermediate activations are not kept for
// backward; backward runs the function again and differentiates that rerun.
#pragma once

#include <functional>
#include <vector>

#include <torch/types.h>

namespace lowbit::nn {

// y = fn(x), built without an autograd graph inside fn. On backward, fn runs
// again on x under grad mode with the random-number state of the first run
// restored (so dropout draws the same masks), and the gradient flows to x and
// to `params`: the tensors fn uses that need gradients (e.g. the LoRA
// adapters of a layer); their gradients accumulate as usual. fn must be
// deterministic apart from that random state and must not change what it
// reads between forward and backward. Outputs one tensor.
torch::Tensor checkpointed(std::function<torch::Tensor(const torch::Tensor&)> fn,
                           const torch::Tensor& x, const std::vector<torch::Tensor>& params);

}  // namespace lowbit::nn
