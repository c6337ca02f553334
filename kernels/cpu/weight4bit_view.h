// Host-side view of a frozen 4-bit weight (kernels::Weight4bit on CPU
// buffers): per-block scales, with double-quantized absmax decoded on the fly,
// and the decoder that turns a run of packed codes into float32 values.
// Internal to kernels/cpu.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/simd_intrinsics.h"

#include "kernels/backend.h"
#include "kernels/cpu/isa_region.h"
#include "kernels/cpu/neon_tables.h"

namespace lowbit::kernels::cpu {

struct Weight4bitView {
  const uint8_t* packed;
  const float* absmax;        // float32 scales, or nullptr under double quantization
  const uint8_t* absmax_codes;  // double quantization: 8-bit codes of absmax - offset
  const float* nested_absmax;
  const float* nested_code;
  int nested_shift;  // log2(nested_blocksize)
  float offset;
  size_t out_features, in_features;
  int block_shift;  // log2(blocksize)
  const float* value;  // the format's 16 code values

  // The scale of block b, computed exactly as dequantize_blockwise does
  // (product, then + offset: two float roundings; kernels build without FMA
  // contraction).
  float scale(size_t b) const {
    if (absmax) return absmax[b];
    const float v = nested_code[absmax_codes[b]] * nested_absmax[b >> nested_shift];
    return v + offset;
  }
};

}  // namespace lowbit::kernels::cpu

LOWBIT_CPU_ISA_BEGIN

#if LOWBIT_CPU_AVX512
// The scales of blocks b..b+15 where `m` is set, 0 elsewhere (w.scale's
// operations: product, then + offset), gathered: the 4-bit gemvs' 512-bit
// loops take a block's scale from this vector by one permute.
inline __m512 block_scales16(const Weight4bitView& w, size_t b, __mmask16 m) {
  if (w.absmax) return _mm512_maskz_loadu_ps(m, w.absmax + b);
  const __m512i codes = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, w.absmax_codes + b));
  const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, codes, w.nested_code, 4);
  const size_t first = b >> w.nested_shift;
  __m512 outer;
  if (((b + 15) >> w.nested_shift) == first) {
    outer = _mm512_set1_ps(w.nested_absmax[first]);
  } else {
    const __m512i rel = _mm512_add_epi32(_mm512_set1_epi32(int(b - (first << w.nested_shift))),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                                           12, 13, 14, 15));
    outer = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m,
                                     _mm512_srl_epi32(rel, _mm_cvtsi32_si128(w.nested_shift)),
                                     w.nested_absmax + first, 4);
  }
  return _mm512_add_ps(_mm512_mul_ps(v, outer), _mm512_set1_ps(w.offset));
}
#endif

#if LOWBIT_CPU_AVX2
// The gemvs read the packed weight once, front to back, a row at a time. On
// the 16-core Xeon host Intel's L2 streamer alone kept one core at about half
// a `memcpy`'s bytes/s (it does not cross 4 KiB pages); asking for the line
// 16 KiB ahead, into L2, once per 64 bytes read made the batch-1 gemvs
// 1.5-1.7x faster there with one thread and 1.1-1.4x with 16 (one run of
// this form, docs/PERFORMANCE.md). An address
// past the weight's end is harmless: a prefetch never faults.
constexpr uintptr_t kPrefetchAhead = 16384;
inline void prefetch_ahead(const uint8_t* p) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + kPrefetchAhead),
               _MM_HINT_T1);
}

// For loops that step through a row's packed values in runs shorter than a
// line: prefetch_ahead (when `ahead`) at each value index k that begins 64
// bytes (128 values) of the row.
inline void prefetch_each_line(bool ahead, const uint8_t* row, size_t k) {
  if (ahead && (k & 127) == 0) prefetch_ahead(row + k / 2);
}
#endif

// Writes dequantized W[f, f + len) (flat indices) to out. Each element is
// value[code] * scale: the same float product dequantize_4bit computes.
inline void decode_run(const Weight4bitView& w, size_t f, size_t len, float* out) {
  while (len > 0) {
    const size_t b = f >> w.block_shift;
    const size_t seg = std::min(len, ((b + 1) << w.block_shift) - f);
    const float s = w.scale(b);
    alignas(64) float lut[16];
    for (int c = 0; c < 16; ++c) lut[c] = w.value[c] * s;
    size_t i = 0;
    if (f & 1) out[i++] = lut[w.packed[f >> 1] & 15];  // a run may start on a low nibble
    const uint8_t* p = w.packed + ((f + i) >> 1);
    const size_t pairs = (seg - i) / 2;
    size_t j = 0;
#if LOWBIT_CPU_AVX512
    // 16 bytes -> 32 values: nibbles interleaved high-first into byte lanes,
    // widened to 32-bit indices, looked up in the 16-entry table in a register.
    const __m512 table = _mm512_load_ps(lut);
    const __m128i low4 = _mm_set1_epi8(15);
    for (; j + 16 <= pairs; j += 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + j));
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), low4);
      const __m128i lo = _mm_and_si128(v, low4);
      const __m512i i0 = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo));
      const __m512i i1 = _mm512_cvtepu8_epi32(_mm_unpackhi_epi8(hi, lo));
      _mm512_storeu_ps(out + i + 2 * j, _mm512_permutexvar_ps(i0, table));
      _mm512_storeu_ps(out + i + 2 * j + 16, _mm512_permutexvar_ps(i1, table));
    }
#elif LOWBIT_CPU_NEON
    // 16 bytes -> 32 values: the unscaled values by byte-plane lookups, then
    // times s (the products lut holds).
    const PlaneTable16 values(w.value);
    const float32x4_t scale = vdupq_n_f32(s);
    for (; j + 16 <= pairs; j += 16) decode_nibbles_scaled(values, p + j, scale, out + i + 2 * j);
#endif
    for (; j < pairs; ++j) {
      out[i + 2 * j] = lut[p[j] >> 4];
      out[i + 2 * j + 1] = lut[p[j] & 15];
    }
    if ((seg - i) & 1) out[seg - 1] = lut[p[pairs] >> 4];
    f += seg;
    out += seg;
    len -= seg;
  }
}

LOWBIT_CPU_ISA_END
