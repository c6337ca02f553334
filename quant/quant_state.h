// QuantState: everything needed to dequantize a blockwise-quantized tensor
// (bitsandbytes' QuantState): format, codebook, block size, absmax (or the
// nested 8-bit state of the absmax under double quantization), shape, dtype.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "quant/codebook.h"

namespace lowbit::quant {

struct QuantState {
  Format format = Format::NF4;
  int64_t blocksize = 64;
  // float32 [num_blocks]; uint8 codes [num_blocks] when `nested` is set.
  torch::Tensor absmax;
  // float32 codebook: [16] for 4-bit, [256] for 8-bit.
  torch::Tensor code;
  std::vector<int64_t> shape;  // of the original tensor
  torch::ScalarType dtype = torch::kFloat32;
  // Double quantization: `absmax` holds 8-bit codes of (absmax - offset),
  // quantized with the signed dynamic map (nested->code) at nested->blocksize.
  std::shared_ptr<QuantState> nested;
  float offset = 0.0f;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t num_blocks() const { return (numel() + blocksize - 1) / blocksize; }
  bool is_4bit() const { return format_info(format).bits == 4; }
  // The same state with its tensors (nested ones too) on `device`.
  QuantState to(const torch::Device& device) const;
};

// Throws unless `blocksize` is a power of two in [format's minimum, 4096];
// `what` names the caller and the argument in the message.
void check_blocksize(int64_t blocksize, Format format, const std::string& what);

}  // namespace lowbit::quant
