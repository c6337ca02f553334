// Linear4bit: a frozen linear layer whose weight is stored as packed NF4/FP4
// codes with a QuantState (bitsandbytes' Linear4bit / Params4bit). forward
// runs the fused dequantize-and-multiply kernels (gemv for one token, tiled
// gemm otherwise) and its backward returns the input gradient only.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "kernels/backend.h"
#include "lora/matmul_4bit.h"
#include "quant/bnb_format.h"
#include "quant/metrics.h"
#include "quant/quant_state.h"

namespace lowbit::lora {

struct Linear4bitOptions {
  // How a float weight is quantized (ignored when the layer is built from
  // already quantized codes).
  TORCH_ARG(quant::Format, format) = quant::Format::NF4;
  TORCH_ARG(int64_t, blocksize) = 64;
  TORCH_ARG(bool, double_quant) = true;
  TORCH_ARG(int64_t, nested_blocksize) = 256;
  // The matmul's dtype (bitsandbytes' compute_dtype): float32, float16 or
  // bfloat16. Inputs are cast to it and outputs cast back to the input's dtype.
  TORCH_ARG(torch::ScalarType, compute_dtype) = torch::kFloat32;
  // Where the matmul runs; nullptr: where the layer's tensors are (the CPU, or
  // their CUDA device once the module is moved with to()). On an OpenCL
  // backend the packed weight is uploaded once and stays on the device;
  // activations cross per call.
  TORCH_ARG(std::shared_ptr<kernels::Backend>, backend) = nullptr;
  // Generation on the CPU: with grad mode off (torch::NoGradGuard), a single
  // token takes the approximate int8 path (Backend::gemv_4bit_int8: x rounded
  // to int8 per weight block, integer dot products; its error bound is in
  // kernels/backend.h, measured in docs/PERFORMANCE.md). Training, and any call
  // with grad mode on, keeps the exact path; other backends ignore it.
  TORCH_ARG(bool, int8_gemv) = false;
};

class Linear4bitImpl : public torch::nn::Module {
 public:
  // Quantizes `linear`'s weight; its bias is kept as a float parameter. The
  // Linear itself is left as it was.
  explicit Linear4bitImpl(const torch::nn::Linear& linear, const Linear4bitOptions& options = {});
  // Quantizes `weight` [out_features, in_features] (float32, bfloat16 or
  // float16: the dtype dequantized_weight() returns), e.g. a tensor a loader
  // has just read; `bias` [out_features] is kept as given and may be undefined.
  Linear4bitImpl(const torch::Tensor& weight, const torch::Tensor& bias,
                 const Linear4bitOptions& options = {});
  // From quantized codes (e.g. read with quant::from_bnb_4bit): `state.shape`
  // must be [out_features, in_features]; `bias` may be undefined.
  Linear4bitImpl(torch::Tensor packed, quant::QuantState state, torch::Tensor bias,
                 const Linear4bitOptions& options = {});

  // x [..., in_features] (float32, bfloat16 or float16) -> [..., out_features]
  // in x's dtype. Differentiable with respect to x (and the bias when it
  // requires grad); the weight is frozen.
  torch::Tensor forward(const torch::Tensor& x);

  int64_t in_features() const { return state_.shape[1]; }
  int64_t out_features() const { return state_.shape[0]; }
  const Linear4bitOptions& options() const { return options_; }
  const quant::QuantState& quant_state() const { return state_; }
  // uint8 [(out*in + 1) / 2, 1]: bitsandbytes' packed layout.
  const torch::Tensor& packed_weight() const { return packed_; }
  // The weight as a float [out, in] tensor of the original dtype (for tests,
  // merging and export; forward never builds it).
  torch::Tensor dequantized_weight() const;

  // Replaces the quantized weight (same shape); used by merge/unmerge and
  // by loading. The device copy is refreshed on the next forward.
  void set_quantized_weight(torch::Tensor packed, quant::QuantState state);

  // The entries bitsandbytes writes for this layer ("<prefix>weight",
  // "<prefix>weight.absmax", ..., "<prefix>bias").
  quant::StateDict bnb_state_dict(const std::string& prefix = "") const;

  // Storage of the quantized weight (bias excluded).
  quant::StorageReport storage() const;

  void pretty_print(std::ostream& stream) const override;

  // float [out_features] or undefined; frozen unless the caller enables its grad.
  torch::Tensor bias;

 private:
  void register_state();

  Linear4bitOptions options_;
  torch::Tensor packed_;
  quant::QuantState state_;
  c10::intrusive_ptr<Kernel4bitWeight> kernel_weight_;
};
TORCH_MODULE(Linear4bit);

// A Linear4bit from bitsandbytes' state_dict entries under `prefix`
// ("<prefix>weight", "<prefix>weight.absmax", ..., "<prefix>bias" if present),
// validated by quant::from_bnb_4bit; `what` names the source in errors.
Linear4bit linear4bit_from_bnb(const quant::StateDict& entries, const std::string& prefix,
                               const std::string& what, const Linear4bitOptions& options = {});

}  // namespace lowbit::lora
