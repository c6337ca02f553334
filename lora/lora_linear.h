// LoraLinear: a frozen base layer (Linear4bit, Linear8bit or torch::nn::Linear) plus a
// trainable low-rank update (Hu et al. 2021, "LoRA"):
//   y = base(x) + scaling * B A dropout(x),  A [r, in], B [out, r],
// scaling = alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski 2023).
// merge() folds scaling * B A into the base weight; unmerge() undoes it.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "quant/quant_state.h"

namespace lowbit::lora {

struct LoraOptions {
  TORCH_ARG(int64_t, r) = 8;
  TORCH_ARG(double, alpha) = 8.0;
  // Dropout on the adapter's input only (the base sees x unchanged), as PEFT.
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(bool, use_rslora) = false;
  // Storage dtype of A and B: float16 (default), bfloat16 or float32. The
  // adapter path always computes in `compute_dtype`. An fp16/bf16 parameter
  // receives its gradient in its own dtype (autograd casts it), so train it
  // with an optimizer that keeps fp32 state and does fp32 math (lowbit's and
  // bitsandbytes' optimizers do); libtorch's CPU optimizers have no float16
  // kernels: use dtype float32 with them.
  TORCH_ARG(torch::ScalarType, dtype) = torch::kFloat16;
  TORCH_ARG(torch::ScalarType, compute_dtype) = torch::kFloat32;
};

class LoraLinearImpl : public torch::nn::Module {
 public:
  // `base` must be a Linear4bitImpl, a Linear8bitImpl or a torch::nn::LinearImpl; it becomes the
  // child "base_layer" (PEFT's name). A is Kaiming-uniform (a = sqrt(5), as
  // torch::nn::Linear and PEFT initialise it), B is zero, so the layer starts
  // as the base.
  explicit LoraLinearImpl(std::shared_ptr<torch::nn::Module> base, const LoraOptions& options = {});

  torch::Tensor forward(const torch::Tensor& x);

  // Folds scaling * B A into the base weight, after which forward runs the
  // base alone. A Linear base is updated in place (float rounding); a
  // Linear4bit base is dequantized, updated and requantized with its own
  // format and block sizes, a Linear8bit base row-wise; a quantized base's
  // original codes are kept so that unmerge() restores them bit for bit.
  void merge();
  void unmerge();
  bool merged() const { return merged_; }

  double scaling() const;
  int64_t in_features() const { return lora_A.size(1); }
  int64_t out_features() const { return lora_B.size(0); }
  const LoraOptions& options() const { return options_; }
  const std::shared_ptr<torch::nn::Module>& base_layer() const { return base_; }
  // scaling * B A as float32 [out, in].
  torch::Tensor delta_weight() const;

  void pretty_print(std::ostream& stream) const override;

  torch::Tensor lora_A;  // [r, in], options.dtype
  torch::Tensor lora_B;  // [out, r], options.dtype

 private:
  torch::Tensor base_forward(const torch::Tensor& x);

  LoraOptions options_;
  std::shared_ptr<torch::nn::Module> base_;
  bool merged_ = false;
  // A quantized base's codes before merge(), restored by unmerge():
  // Linear4bit's packed codes and state, or Linear8bit's codes and SCB.
  torch::Tensor unmerged_codes_;
  quant::QuantState unmerged_state_;
  torch::Tensor unmerged_scb_;
};
TORCH_MODULE(LoraLinear);

}  // namespace lowbit::lora
