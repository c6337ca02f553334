// Global gradient-norm clipping with torch's rule (clip_grad_norm_): scale
// every gradient by max_norm / (norm + 1e-6) when that is below 1. Written
// here because libtorch 1.13's clip_grad_norm_ fails on float16 gradients
// (LoRA adapters) on the CPU.
#pragma once

#include <vector>

#include <torch/types.h>

namespace lowbit::train {

// Returns the L2 norm of all gradients before clipping (tensors without a
// gradient are skipped; each norm is taken in float32 or wider); clips when
// max_norm > 0.
double clip_gradients(const std::vector<torch::Tensor>& params, double max_norm);

}  // namespace lowbit::train
