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

// IEEE binary16 -> binary32, exact (subnormals included).
inline float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_float(sign);
  // Subnormal half: value = mant * 2^-24, exactly representable as a float.
  int e = 0;
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    ++e;
  }
  mant &= 0x3ffu;
  return bits_float(sign | uint32_t(113 - e) << 23 | (mant << 13));
}

// IEEE binary32 -> binary16, round to nearest even, overflow to inf.
inline uint16_t float_to_f16(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65536: inf
  if (a >= 0x38800000u) {                                 // normal half range
    const uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
    return uint16_t(sign | (r >> 13));
  }
  if (a < 0x33000000u) return sign;  // below half the smallest subnormal: +-0
  // Subnormal half: shift the full significand, round to nearest even.
  const uint32_t exp = a >> 23;
  const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - exp;  // 14..24
  const uint32_t half_ulp = 1u << (shift - 1);
  uint32_t q = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  if (rem > half_ulp || (rem == half_ulp && (q & 1u))) ++q;
  return uint16_t(sign | q);
}

}  // namespace lowbit::kernels
