// LLM.int8()'s int8 matmul on CUDA memory (semantics: Backend::gemm_int8 in
// kernels/backend.h): x rows quantized by their absmax into a stream-ordered
// temporary, then int8 dot products with __dp4a (four signed byte products
// summed into int32 per instruction), rescaled with the CPU's float
// operations, so the results agree with the CPU bit for bit. A plain kernel
// (one warp per output), correct rather than fast. Internal to kernels/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace lowbit::kernels::cuda {

// Device pointers of a kernels::WeightInt8 (row sums are not needed: dp4a
// multiplies signed bytes directly).
struct WeightInt8Dev {
  const int8_t* codes = nullptr;  // [out_features, in_features], row-major
  const float* scale = nullptr;   // [out_features], SCB
  size_t out_features = 0, in_features = 0;
};

// y[m, out] = x[m, in] * W^T (+ bias), float32, queued on `stream`.
void gemm_int8(const float* x, size_t m, const WeightInt8Dev& w, const float* bias, float* y,
               cudaStream_t stream);

}  // namespace lowbit::kernels::cuda
