// Element types the kernels read and write, and exact scalar conversions
// between them. Both backends use these bit-level rules (round to nearest even),
// so CPU and OpenCL results agree bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/shared_math.h"

namespace lowbit::kernels {

enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2, U8 = 3 };

constexpr size_t dtype_size(DType t) {
  return t == DType::F32 ? 4 : (t == DType::U8 ? 1 : 2);
}

const char* dtype_name(DType t);

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

// Round to nearest even (the rule the OpenCL programs share).
inline uint16_t float_to_bf16(float f) { return uint16_t(lb_bf16_bits(f)); }

// IEEE binary16 <-> binary32 without branches, so that loops over half
// tensors vectorise. The float arithmetic below only scales by powers of two
// and rounds values below 2^10 to integers (in the default round-to-nearest
// mode): every step is exact or the intended rounding. No intermediate is a
// float subnormal, and a subnormal float input encodes to a signed zero with
// or without denormals-are-zero, so flush-to-zero / DAZ modes (which torch
// can set) do not change the results.

// binary16 -> binary32, exact (subnormals included, NaN payloads kept).
inline float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;  // exponent and mantissa fields
  // Normal: re-bias the exponent (15 -> 127); inf / NaN: exponent 31 -> 255.
  uint32_t bits = (em << 13) + (112u << 23);
  bits += em >= 0x7c00u ? 112u << 23 : 0u;
  // Zero and subnormal: em * 2^-24 (em < 2^10 converts exactly). Computed
  // for every input and then selected, so the compiler can vectorise it.
  const uint32_t small = float_bits(float(int32_t(em)) * 0x1p-24f);
  return bits_float(sign | (em < 0x400u ? small : bits));
}

// binary32 -> binary16, round to nearest even, overflow to inf, NaN to the
// quiet NaN 0x7e00 (with the sign).
inline uint16_t float_to_f16(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  // Normal half range [2^-14, 65520): round off 13 mantissa bits (a carry
  // moves into the exponent) and re-bias the exponent.
  const uint32_t normal = (a + 0xfffu + ((a >> 13) & 1u) - (112u << 23)) >> 13;
  // Below 2^-14 the half is a multiple of 2^-24: |f| * 2^24 < 2^10 is exact,
  // and adding 2^23 rounds it to an integer (unit spacing there, nearest
  // even), which is then the low bits of the sum. 1024 is the smallest normal.
  const uint32_t small = float_bits(bits_float(a) * 0x1p24f + 0x1p23f) - 0x4b000000u;
  uint32_t r = a >= 0x38800000u ? normal : small;
  r = a >= 0x477ff000u ? 0x7c00u : r;  // rounds to >= 65536: inf
  r = a > 0x7f800000u ? 0x7e00u : r;   // NaN
  return uint16_t(sign | r);
}

// out[i] = f16_to_float(in[i]) / float_to_f16(in[i]) for i < n, bit for bit,
// in every floating-point mode; with the F16C conversion instructions
// (vcvtph2ps / vcvtps2ph, 16 values per instruction) where the build has
// AVX-512.
void f16_to_float_n(const uint16_t* in, float* out, size_t n);
void float_to_f16_n(const float* in, uint16_t* out, size_t n);

}  // namespace lowbit::kernels
