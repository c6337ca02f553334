// Int8 quantization of weights: symmetric (absmax) or asymmetric (min/max
// with an integer zero point), one scale per output channel or per group of a
// row; and the row-wise absmax form of LLM.int8() (Dettmers et al. 2022) that
// bitsandbytes' Int8Params stores: int8 codes plus SCB, the row absmax.
#pragma once

#include <cstdint>
#include <utility>

#include <torch/types.h>

namespace lowbit::quant {

struct Int8Options {
  // Symmetric: codes in [-127, 127] of a scale absmax / 127 (zero exact, no
  // offset). Asymmetric: the range [min(w, 0), max(w, 0)] mapped onto all
  // 256 codes [-128, 127], with an integer offset (the code of 0.0, so zero
  // stays exact too), as PyTorch's and ONNX's affine int8 schemes do.
  bool symmetric = true;
  // 0: one scale per output channel (row; dim 0 of the weight). > 0: one per
  // group of this many consecutive values of a row (must divide the row).
  int64_t group_size = 0;
};

// w ~ (codes - offset) * scale, scale and offset broadcast over each group.
struct Int8Quantized {
  torch::Tensor codes;   // int8, the weight's shape
  torch::Tensor scale;   // float32 [rows, groups] (groups = 1 per channel)
  torch::Tensor offset;  // int8 [rows, groups]; undefined when symmetric
  Int8Options options;
  torch::ScalarType dtype = torch::kFloat32;  // of the original weight
};

// Rounds half to even (torch::round). A 1-d tensor is one row; a tensor of
// more dimensions has size(0) rows. Throws on non-finite values, a dtype
// that is not floating point, or a group size that does not divide the row.
Int8Quantized quantize_int8(const torch::Tensor& w, const Int8Options& options = {});
// The weight back, in its original dtype and shape.
torch::Tensor dequantize_int8(const Int8Quantized& q);

// bitsandbytes' Int8Params of a weight [out, in]: codes = round(w * (127 /
// SCB)) per row with SCB = max |row| (float32 [out]); a zero row has SCB 0
// and codes 0. The same codes as quantize_int8's symmetric per-channel form,
// whose scale is SCB / 127.
std::pair<torch::Tensor, torch::Tensor> quantize_int8_rowwise(const torch::Tensor& w);
// codes * (SCB / 127) as float32 [out, in].
torch::Tensor dequantize_int8_rowwise(const torch::Tensor& codes, const torch::Tensor& scb);

}  // namespace lowbit::quant
