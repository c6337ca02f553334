// Linear8bit: a frozen linear layer with an int8 weight in bitsandbytes'
// Int8Params layout (int8 codes + SCB row absmax; bitsandbytes'
// Linear8bitLt). forward is LLM.int8() (Dettmers et al. 2022): each input
// row quantized to int8 by its absmax, an int8 matmul with int32 sums, and
// input columns holding outliers multiplied in float. Its backward returns
// the input gradient only, so it can serve as a LoRA base.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "kernels/backend.h"
#include "quant/bnb_format.h"
#include "quant/metrics.h"

namespace lowbit::lora {

struct Linear8bitOptions {
  // LLM.int8()'s outlier threshold: input columns (features) where any row
  // has |x| >= threshold (bitsandbytes' comparison) are multiplied in float
  // with the dequantized weight's columns and left out of the int8 product,
  // so they neither lose precision nor widen the other values' scale. 0 turns
  // it off (bitsandbytes' default); the paper uses 6.0.
  TORCH_ARG(double, threshold) = 0.0;
  // Keep a float32 dequantized copy of the weight and multiply with it:
  // float32 speed for repeated inference at float32 memory (4 more bytes per
  // parameter; cache_bytes() reports it, clear_cache() frees it until the
  // next forward). Results are those of a float layer with the dequantized
  // weight: inputs are not quantized and the threshold plays no part.
  TORCH_ARG(bool, use_cache) = false;
  // Where the int8 matmul runs; nullptr: where the layer's tensors are (the
  // CPU, or their CUDA device once the module is moved with to()); an OpenCL
  // backend computes the same bits on its device.
  TORCH_ARG(std::shared_ptr<kernels::Backend>, backend) = nullptr;
};

class Linear8bitImpl : public torch::nn::Module {
 public:
  // Quantizes `linear`'s weight row-wise (quant::quantize_int8_rowwise); its
  // bias is kept as a float parameter. The Linear itself is left as it was.
  explicit Linear8bitImpl(const torch::nn::Linear& linear, const Linear8bitOptions& options = {});
  // From quantized tensors (e.g. read with quant::from_bnb_int8): `weight`
  // int8 [out, in], `scb` float32 [out]; `bias` [out] or undefined.
  Linear8bitImpl(torch::Tensor weight, torch::Tensor scb, torch::Tensor bias,
                 const Linear8bitOptions& options = {});

  // x [..., in_features] (float32, bfloat16 or float16) -> [..., out_features]
  // in x's dtype, computed in float32. Differentiable with respect to x (and
  // the bias when it requires grad): dx = dy W with W dequantized.
  torch::Tensor forward(const torch::Tensor& x);

  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }
  const Linear8bitOptions& options() const { return options_; }
  // int8 [out, in] and float32 [out] (bitsandbytes' weight.CB and SCB).
  const torch::Tensor& int8_weight() const { return weight_; }
  const torch::Tensor& scb() const { return scb_; }
  // weight * SCB / 127 as float32 [out, in] (forward builds it only for
  // outlier columns, or once for the cache).
  torch::Tensor dequantized_weight() const;

  // Replaces the quantized weight (same shape); used by merge/unmerge and by
  // loading. Drops the cache.
  void set_quantized_weight(torch::Tensor weight, torch::Tensor scb);

  // "<prefix>weight", "<prefix>SCB", "<prefix>weight_format" (+ "<prefix>bias").
  quant::StateDict bnb_state_dict(const std::string& prefix = "") const;

  // Storage of the int8 weight (codes + SCB; bias and cache excluded).
  quant::StorageReport storage() const;
  // Bytes of the dequantized cache now held (0 without one).
  int64_t cache_bytes() const;
  void clear_cache();

  void pretty_print(std::ostream& stream) const override;

  // float [out_features] or undefined; frozen unless the caller enables its grad.
  torch::Tensor bias;

  struct Binding;

 private:
  void register_state();
  // The weight bound to its backend, rebound when the tensors changed.
  std::shared_ptr<Binding> binding() const;

  Linear8bitOptions options_;
  torch::Tensor weight_, scb_;
  mutable std::mutex mutex_;
  mutable std::shared_ptr<Binding> binding_;
};
TORCH_MODULE(Linear8bit);

// A Linear8bit from bitsandbytes' Linear8bitLt entries under `prefix`
// ("<prefix>weight", "<prefix>SCB", optional "<prefix>weight_format" and
// "<prefix>bias"), validated by quant::from_bnb_int8; `what` names the source.
Linear8bit linear8bit_from_bnb(const quant::StateDict& entries, const std::string& prefix,
                               const std::string& what, const Linear8bitOptions& options = {});

}  // namespace lowbit::lora
