// Torch-level blockwise quantization: 8-bit (dynamic map or any sorted 256-entry
// codebook) and 4-bit NF4/FP4 with optional double quantization of the absmax.
// Inputs are float32/float16/bfloat16 tensors on the CPU or a CUDA device;
// results are created on the input's device. Without a backend argument the
// input's device picks it (CPU, or that device's CUDA backend); an explicit
// one must reach the tensors (e.g. OpenCL for CPU tensors).
#pragma once

#include <cstdint>
#include <utility>

#include <torch/types.h>

#include "kernels/backend.h"
#include "quant/quant_state.h"

namespace lowbit::quant {

struct BlockwiseOptions {
  int64_t blocksize = 4096;
  // The codebook: the signed dynamic map unless `code` is given (a float32
  // tensor of 256 ascending values in [-1, 1]).
  Format format = Format::DynamicSigned;
  torch::Tensor code;
  // Stochastic rounding, reproducible for a given seed.
  bool stochastic = false;
  uint64_t seed = 0;
};

// Returns (codes uint8 with A's shape, state).
std::pair<torch::Tensor, QuantState> quantize_blockwise(const torch::Tensor& A,
                                                        const BlockwiseOptions& options = {});
std::pair<torch::Tensor, QuantState> quantize_blockwise(const torch::Tensor& A,
                                                        const BlockwiseOptions& options,
                                                        kernels::Backend& backend);
torch::Tensor dequantize_blockwise(const torch::Tensor& codes, const QuantState& state);
torch::Tensor dequantize_blockwise(const torch::Tensor& codes, const QuantState& state,
                                   kernels::Backend& backend);

struct Quantize4bitOptions {
  Format format = Format::NF4;
  int64_t blocksize = 64;
  // Double quantization (QLoRA): absmax - mean(absmax) stored as 8-bit codes of
  // the signed dynamic map in blocks of `nested_blocksize`.
  bool double_quant = true;
  int64_t nested_blocksize = 256;
};

// Returns (packed uint8 [(numel+1)/2, 1], state), bitsandbytes' layout.
std::pair<torch::Tensor, QuantState> quantize_4bit(const torch::Tensor& A,
                                                   const Quantize4bitOptions& options = {});
std::pair<torch::Tensor, QuantState> quantize_4bit(const torch::Tensor& A,
                                                   const Quantize4bitOptions& options,
                                                   kernels::Backend& backend);

torch::Tensor dequantize_4bit(const torch::Tensor& packed, const QuantState& state);
torch::Tensor dequantize_4bit(const torch::Tensor& packed, const QuantState& state,
                              kernels::Backend& backend);

// The float32 absmax of a state (on its absmax's device), dequantizing it
// first under double quantization.
torch::Tensor dequantize_absmax(const QuantState& state);
torch::Tensor dequantize_absmax(const QuantState& state, kernels::Backend& backend);

// Throws unless `state` is internally consistent (absmax/code sizes and dtypes,
// nested state) and `codes` matches it, with the absmax on the codes' device;
// `what` names the caller in the message.
void check_state(const torch::Tensor& codes, const QuantState& state, const char* what);

}  // namespace lowbit::quant
