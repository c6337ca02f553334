// The CPU implementation of the 4-bit matmul ops (semantics: kernels/backend.h)
// on a host view of the weight. gemv: a vectorised pass over the packed codes
// (AVX-512 / AVX2 table lookup, scalar fallback); gemm and the input gradient:
// W decoded one L2-sized tile at a time, each tile multiplied with Eigen.
#pragma once

#include <cstddef>

#include "kernels/cpu/isa_region.h"
#include "kernels/cpu/weight4bit_view.h"

LOWBIT_CPU_ISA_BEGIN

// y[m, out] = x[m, in] * W^T (+ bias); x, bias, y of `dtype` (F32 or BF16).
void gemm_4bit(const void* x, size_t m, const Weight4bitView& w, const void* bias, void* y,
               DType dtype);
void gemv_4bit(const void* x, const Weight4bitView& w, const void* bias, void* y, DType dtype);
// dx[m, in] = dy[m, out] * W.
void gemm_4bit_input_grad(const void* dy, size_t m, const Weight4bitView& w, void* dx,
                          DType dtype);

// gemv_4bit approximately, with int8 dot products (Backend::gemv_4bit_int8):
// the AVX2 and AVX-512 paths, for rows of whole blocks of 64 values or a
// multiple. Everywhere else gemv_4bit itself runs (a scalar integer loop
// would be slower than its vector loop).
void gemv_4bit_int8(const void* x, const Weight4bitView& w, const void* bias, void* y,
                    DType dtype);

// Whether gemv_4bit takes the vector loop for rows of `in_features` values
// (otherwise it runs the tiled gemm path with m = 1); tests use it to cover both.
bool gemv_4bit_vectorised(size_t in_features);

#if LOWBIT_CPU_AVX2
// The sum of the eight lanes.
inline float lane_sum(__m256 a) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}
#endif

LOWBIT_CPU_ISA_END
