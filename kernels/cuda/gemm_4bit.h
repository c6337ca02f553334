// 4-bit matmul on CUDA memory with a frozen NF4 / FP4 weight (QLoRA): y = x W^T (+ bias) and the
// input gradient dx = dy W, with the semantics of kernels/backend.h. Each call is queued on the
// caller's stream and never synchronises the host; temporaries are stream-ordered allocations.
// Torch-free: raw device pointers and the plain weight view below.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/dtype.h"

namespace lowbit::kernels::cuda {

// Device view of a frozen 4-bit weight W [out_features, in_features] (kernels::Weight4bit on
// CUDA memory). Element (o, i) is flat index f = o*in_features + i; its code is the high nibble
// of packed[f >> 1] when f is even, the low nibble when odd. Blocks of 2^block_shift elements run
// along the FLATTENED weight (a block may straddle rows; in_features need not be a multiple of the
// block size). Block b's scale: absmax[b] when absmax != nullptr, otherwise (double quantization)
// __fadd_rn(__fmul_rn(nested_code[absmax_codes[b]], nested_absmax[b >> nested_shift]), offset)
// (a product then a sum: two float roundings, never an fma). Element value = __fmul_rn(value[code], scale).
struct Weight4bitDev {
  const uint8_t* packed = nullptr;
  const float* absmax = nullptr;          // float32 scales, or nullptr under double quantization
  const uint8_t* absmax_codes = nullptr;  // double quantization: 8-bit codes of absmax - offset
  const float* nested_absmax = nullptr;
  const float* nested_code = nullptr;     // 256 floats
  int nested_shift = 8;
  float offset = 0.0f;
  size_t out_features = 0, in_features = 0;
  int block_shift = 6;
  float value[16] = {};                   // the format's 16 code values (NF4 or FP4 table)
};

// y[m, out] = x[m, in] * W^T (+ bias[out]); x, bias, y have `dtype` (DType::F32, F16 or BF16,
// see kernels/dtype.h). m >= 1. Runs asynchronously on `stream`; never synchronises the host.
// Products accumulate in float32 and each output is rounded to `dtype` once, after the bias is
// added. F32 never uses tensor cores or TF32. F16 / BF16 with m >= 2 multiply on tensor cores
// with the decoded weight rounded to `dtype` first (as bitsandbytes does); m = 1 decodes in float.
void gemm_4bit(const void* x, size_t m, const Weight4bitDev& w, const void* bias, void* y,
               DType dtype, cudaStream_t stream);
// dx[m, in] = dy[m, out] * W  (the input gradient; W is frozen). Same numerics as gemm_4bit.
void gemm_4bit_input_grad(const void* dy, size_t m, const Weight4bitDev& w, void* dx, DType dtype,
                          cudaStream_t stream);

}  // namespace lowbit::kernels::cuda
