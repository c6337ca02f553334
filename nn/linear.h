// lowbit::nn::Linear: a drop-in for torch::nn::Linear (same constructor
// arguments, same state_dict names) that stays the model's layer through
// quantize_model and apply_lora: they change it in place into NF4 / FP4
// (Linear4bit), int8 (Linear8bit) or a LoRA adapter over any of those, so a
// typed member `lowbit::nn::Linear fc1` keeps working and `fc1(x)` runs the
// current form.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>

#include <torch/nn/modules/linear.h>
#include <torch/nn/options/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "lora/in_place_layer.h"

namespace lowbit::nn {

class LinearImpl : public lora::InPlaceLayer {
 public:
  // A float torch::nn::Linear [out, in] (+ bias), initialised as torch does.
  LinearImpl(int64_t in_features, int64_t out_features);
  explicit LinearImpl(const torch::nn::LinearOptions& options);
  // Takes `linear` (the same module, no copy) as its first form.
  explicit LinearImpl(torch::nn::Linear linear);

  // x [..., in_features] -> [..., out_features] through the current form.
  torch::Tensor forward(const torch::Tensor& x);

  int64_t in_features() const;
  int64_t out_features() const;
  bool has_bias() const;

  // The current form while it is a float torch::nn::Linear, else nullptr
  // (its `weight` and `bias` are what torch::nn::Linear users reach for).
  torch::nn::LinearImpl* as_float_linear();

  void pretty_print(std::ostream& stream) const override;
};
TORCH_MODULE(Linear);

}  // namespace lowbit::nn
