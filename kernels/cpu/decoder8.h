// Fast 8-bit dequantization on the CPU: out[i] = code[codes[i]] * absmax, the
// same products as the scalar loop. With AVX512-VBMI the 256 codebook floats
// are held as four byte planes and 64 codes are looked up per step with byte
// permutes (vpermi2b) instead of gathers, which cost ~1 cycle per element.
// The AVX2 path loads eight entries one by one and blends them into a vector
// (vpgatherdd is slower on Zen 4). NEON looks the byte planes up with 64-byte
// table lookups (tbl/tbx), 16 codes per step.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/isa_region.h"

LOWBIT_CPU_ISA_BEGIN

class Decoder8 {
 public:
  explicit Decoder8(const float* code);

  // The decoder of `code`, built once per distinct codebook and cached.
  static const Decoder8& for_code(const float* code);

  void decode_scaled(const uint8_t* codes, float absmax, float* out, size_t n) const;

 private:
  std::array<float, 256> code_;
  // planes_[k][c] = byte k (little-endian) of code_[c].
  alignas(64) uint8_t planes_[4][256];
};

// Decoder8::for_code(code).decode_scaled(codes, absmax, out, n), for the tests
// (see encode_scaled_8bit).
void decode_scaled_8bit(const float* code, const uint8_t* codes, float absmax, float* out,
                        size_t n);

LOWBIT_CPU_ISA_END
