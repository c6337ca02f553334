#include "kernels/cpu/decoder8.h"

#include "kernels/cpu/simd_intrinsics.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/codebook_cache.h"
#include "kernels/cpu/neon_tables.h"

LOWBIT_CPU_ISA_BEGIN
namespace {

#if LOWBIT_CPU_AVX512
// After the byte-plane lookups, two rounds of in-lane unpacking leave float r
// of 128-bit lane L holding byte position 16L + 4r + j (j = 0..3). Feeding the
// codes through this permutation first puts element 16r + 4L + j there, so
// the four result registers come out in element order.
__m512i element_order() {
  alignas(64) uint8_t idx[64];
  for (int lane = 0; lane < 4; ++lane)
    for (int r = 0; r < 4; ++r)
      for (int j = 0; j < 4; ++j) idx[16 * lane + 4 * r + j] = uint8_t(16 * r + 4 * lane + j);
  return _mm512_load_si512(idx);
}
#elif LOWBIT_CPU_AVX2
// The entries of eight codes (byte k of c: lane k) without vpgatherdd, which
// Zen 4 runs slowly: each entry is a broadcast load (a load uop) and blends
// put it in its lane. The codes are one 64-bit word, and each 16-bit shift of
// it yields two indices (its low and high byte registers: one movzx each). On
// the 2-core Zen 4 VM, 256-code blocks in L1, best of 31: 0.198 ns per value,
// against 0.218 with two 32-bit words and a shift and mask per index, and the
// gather's 0.38 (the VBMI decoder: 0.08).
__m256 eight_entries(const float* table, const uint8_t* codes) {
  uint64_t word;
  std::memcpy(&word, codes, 8);
  __m256 e[8];
  for (int k = 0; k < 8; k += 2) {
    const uint32_t low_bytes = uint32_t(word);
    e[k] = _mm256_broadcast_ss(table + (low_bytes & 0xff));
    e[k + 1] = _mm256_broadcast_ss(table + ((low_bytes >> 8) & 0xff));
    word >>= 16;
  }
  const __m256 low = _mm256_blend_ps(_mm256_blend_ps(e[0], e[1], 0x02),
                                     _mm256_blend_ps(e[2], e[3], 0x08), 0x0c);
  const __m256 high = _mm256_blend_ps(_mm256_blend_ps(e[4], e[5], 0x20),
                                      _mm256_blend_ps(e[6], e[7], 0x80), 0xc0);
  return _mm256_blend_ps(low, high, 0xf0);
}
#endif

}  // namespace

Decoder8::Decoder8(const float* code) {
  std::copy(code, code + 256, code_.begin());
  for (int c = 0; c < 256; ++c) {
    uint8_t bytes[4];
    std::memcpy(bytes, &code_[size_t(c)], 4);
    for (int k = 0; k < 4; ++k) planes_[k][c] = bytes[k];
  }
}

const Decoder8& Decoder8::for_code(const float* code) { return for_codebook<Decoder8>(code); }

void decode_scaled_8bit(const float* code, const uint8_t* codes, float absmax, float* out,
                        size_t n) {
  Decoder8::for_code(code).decode_scaled(codes, absmax, out, n);
}

void Decoder8::decode_scaled(const uint8_t* codes, float absmax, float* out, size_t n) const {
  size_t i = 0;
#if LOWBIT_CPU_AVX512
  const __m512i order = element_order();
  const __m512 m = _mm512_set1_ps(absmax);
  __m512i table[4][4];
  for (int k = 0; k < 4; ++k)
    for (int q = 0; q < 4; ++q) table[k][q] = _mm512_load_si512(&planes_[k][64 * q]);
  for (; i + 64 <= n; i += 64) {
    const __m512i c = _mm512_permutexvar_epi8(order, _mm512_loadu_si512(codes + i));
    const __mmask64 upper = _mm512_movepi8_mask(c);  // code >= 128
    __m512i plane[4];
    for (int k = 0; k < 4; ++k) {
      const __m512i lo = _mm512_permutex2var_epi8(table[k][0], c, table[k][1]);
      const __m512i hi = _mm512_permutex2var_epi8(table[k][2], c, table[k][3]);
      plane[k] = _mm512_mask_blend_epi8(upper, lo, hi);
    }
    const __m512i b01_lo = _mm512_unpacklo_epi8(plane[0], plane[1]);
    const __m512i b01_hi = _mm512_unpackhi_epi8(plane[0], plane[1]);
    const __m512i b23_lo = _mm512_unpacklo_epi8(plane[2], plane[3]);
    const __m512i b23_hi = _mm512_unpackhi_epi8(plane[2], plane[3]);
    const __m512i f[4] = {
        _mm512_unpacklo_epi16(b01_lo, b23_lo), _mm512_unpackhi_epi16(b01_lo, b23_lo),
        _mm512_unpacklo_epi16(b01_hi, b23_hi), _mm512_unpackhi_epi16(b01_hi, b23_hi)};
    for (int r = 0; r < 4; ++r)
      _mm512_storeu_ps(out + i + 16 * r, _mm512_mul_ps(_mm512_castsi512_ps(f[r]), m));
  }
#elif LOWBIT_CPU_AVX2
  const __m256 m = _mm256_set1_ps(absmax);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(eight_entries(code_.data(), codes + i), m));
#elif LOWBIT_CPU_NEON
  // The byte planes as four 64-byte tables each: tbl looks codes 0-63 up and
  // zeroes the rest, then tbx on code - 64, - 128, - 192 fills the other
  // quarters (an index past 63 leaves a lane as it is). 16 codes per step.
  uint8x16x4_t table[4][4];
  for (int k = 0; k < 4; ++k)
    for (int q = 0; q < 4; ++q) table[k][q] = vld1q_u8_x4(&planes_[k][64 * q]);
  const float32x4_t m = vdupq_n_f32(absmax);
  const uint8x16_t quarter = vdupq_n_u8(64);
  for (; i + 16 <= n; i += 16) {
    const uint8x16_t c0 = vld1q_u8(codes + i);
    const uint8x16_t c1 = vsubq_u8(c0, quarter);
    const uint8x16_t c2 = vsubq_u8(c1, quarter);
    const uint8x16_t c3 = vsubq_u8(c2, quarter);
    uint8x16_t plane[4];
    for (int k = 0; k < 4; ++k) {
      uint8x16_t b = vqtbl4q_u8(table[k][0], c0);
      b = vqtbx4q_u8(b, table[k][1], c1);
      b = vqtbx4q_u8(b, table[k][2], c2);
      plane[k] = vqtbx4q_u8(b, table[k][3], c3);
    }
    uint32x4_t f[4];
    join_planes(plane, f);
    for (int r = 0; r < 4; ++r)
      vst1q_f32(out + i + 4 * r, vmulq_f32(vreinterpretq_f32_u32(f[r]), m));
  }
#endif
  for (; i < n; ++i) out[i] = code_[codes[i]] * absmax;
}

LOWBIT_CPU_ISA_END
