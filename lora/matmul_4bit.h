// The torch-level 4-bit matmul (bitsandbytes' matmul_4bit): y = x W^T + bias
// with W given as packed NF4/FP4 codes and a QuantState, differentiable with
// respect to x and the bias (W is frozen: its backward is dx = dy W through the
// same fused kernels). Kernel4bitWeight is a weight bound to a backend, kept
// on the device between calls; Linear4bit holds one.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include <torch/custom_class.h>
#include <torch/types.h>

#include "kernels/backend.h"
#include "quant/quant_state.h"

namespace lowbit::lora {

// Throws naming `what` unless (packed, state) is a consistent 4-bit weight of
// shape [out_features, in_features].
void check_weight_4bit(const torch::Tensor& packed, const quant::QuantState& state,
                       const char* what);

// A 4-bit weight [out, in] on a backend. Where the backend reaches the
// tensors (CPU tensors on the CPU, CUDA tensors on their device) the buffers
// wrap them; on OpenCL they are device copies, uploaded again only when a
// tensor was modified or replaced since (tracked by data pointer, device and
// version counter).
class Kernel4bitWeight : public torch::CustomClassHolder {
 public:
  // `backend` null: the packed codes' device decides at each sync (so a layer
  // moved with Module::to follows its tensors).
  explicit Kernel4bitWeight(std::shared_ptr<kernels::Backend> backend);
  ~Kernel4bitWeight() override;

  // Binds (or re-binds) the weight; validates it once. Returns the
  // generation, which changes whenever the bound data changes.
  uint64_t sync(const torch::Tensor& packed, const quant::QuantState& state);
  uint64_t generation() const { return generation_.load(); }
  // Of the bound weight (throws before the first sync).
  int64_t in_features() const;
  int64_t out_features() const;

  // Where the bound weight lives (throws before the first sync).
  torch::Device device() const;

  // x [m, in] contiguous float32/float16/bfloat16 on the weight's device ->
  // x W^T (+ bias) [m, out], same dtype. `int8_gemv`: one token (m = 1) takes
  // Backend::gemv_4bit_int8, the approximate integer path.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias,
                        bool int8_gemv = false) const;
  // dy [m, out] -> dy W [m, in], same dtype.
  torch::Tensor input_grad(const torch::Tensor& dy) const;

 private:
  struct Binding;
  bool stale(const torch::Tensor& packed, const quant::QuantState& state) const;
  // The current binding, kept alive for the caller even if a sync replaces it.
  std::shared_ptr<const Binding> binding() const;

  std::shared_ptr<kernels::Backend> backend_;
  std::shared_ptr<const Binding> binding_;
  std::atomic<uint64_t> generation_{0};
  mutable std::mutex mutex_;
};

// y = x W^T (+ bias) with autograd (grad for x and, when it requires grad,
// bias). x [..., in] of float32/float16/bfloat16 (the compute dtype) on the
// weight's device; bias [out] of x's dtype or undefined. `weight` must have
// been synced. `int8_gemv`: with grad mode off (torch::NoGradGuard, as in
// generation and evaluation), one token takes Backend::gemv_4bit_int8; with
// grad mode on the exact path always runs.
torch::Tensor matmul_4bit(const torch::Tensor& x, const c10::intrusive_ptr<Kernel4bitWeight>& weight,
                          const torch::Tensor& bias = {}, bool int8_gemv = false);

// Convenience form for a one-off call on the backend of the codes' device.
torch::Tensor matmul_4bit(const torch::Tensor& x, const torch::Tensor& packed,
                          const quant::QuantState& state, const torch::Tensor& bias = {});

}  // namespace lowbit::lora
