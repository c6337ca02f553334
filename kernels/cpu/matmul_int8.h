// The CPU int8 matmul of LLM.int8() (semantics: Backend::gemm_int8 in
// kernels/backend.h): x rows quantized by their absmax, int8 x int8 products
// accumulated in int32, rescaled per row of x and per row of W. Three
// integer cores that must agree exactly: a scalar `_ref`, AVX2 (bytes widened
// to int16, madd) and AVX-512 VNNI (vpdpbusd, u8 x s8: x shifted by +128, the
// shift taken back off through the weight's row sums). Internal to kernels/cpu.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu/isa_region.h"

namespace lowbit::kernels::cpu {

// A host view of kernels::WeightInt8.
struct WeightInt8View {
  const int8_t* codes;      // [out_features, in_features], row-major
  const float* scale;       // [out_features], SCB (row absmax)
  const int32_t* row_sums;  // [out_features], sum of each row's codes
  size_t out_features, in_features;
};

enum class Int8Core { Ref, Avx2, Vnni };

const char* int8_core_name(Int8Core core);

}  // namespace lowbit::kernels::cpu

LOWBIT_CPU_ISA_BEGIN

// The cores this instruction-set path has, `Ref` first; the last is the
// fastest, which gemm_int8 uses.
std::vector<Int8Core> int8_cores();

// codes[r, :] = round-half-even(x[r, :] * (127 / absmax[r])); absmax[r] =
// max |x[r, :]|, or NaN when the row holds inf or NaN (its codes are then 0).
void quantize_rows_int8(const float* x, size_t m, size_t k, int8_t* codes, float* absmax);

// acc[m, out] = x_codes[m, in] * W^T in int32 with `core` (the tests' view of
// the integer arithmetic alone).
void gemm_int8_s32(Int8Core core, const int8_t* x_codes, size_t m, const WeightInt8View& w,
                   int32_t* acc);

// y[m, out] = x[m, in] * W^T (+ bias) as Backend::gemm_int8 defines it, with
// `core`, or the fastest core built.
void gemm_int8_core(Int8Core core, const float* x, size_t m, const WeightInt8View& w,
                    const float* bias, float* y);
void gemm_int8(const float* x, size_t m, const WeightInt8View& w, const float* bias, float* y);

LOWBIT_CPU_ISA_END
