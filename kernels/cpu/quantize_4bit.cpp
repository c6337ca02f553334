// NF4 / FP4 blockwise quantization, two codes per byte (element 2j in the high
// nibble), following bitsandbytes' packing. The AVX-512, AVX2 and NEON paths
// search the 16 midpoints held in registers, several values per step.
#include "kernels/cpu/simd_intrinsics.h"

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/element_io.h"
#include "kernels/cpu/neon_tables.h"

#include <limits>
#include <type_traits>

LOWBIT_CPU_ISA_BEGIN
namespace {

#if LOWBIT_CPU_AVX2 && !LOWBIT_CPU_AVX512
const __m256i* as_m256i(const int32_t* p) { return reinterpret_cast<const __m256i*>(p); }

// Entry `index` (0..15) of a 16-entry table held as two 8-lane halves: both
// halves permuted, then blended by bit 3 of the index.
__m256 lookup16(__m256 low, __m256 high, __m256i index) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(low, index),
                          _mm256_permutevar8x32_ps(high, index),
                          _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
}
#endif

// Elements encoded per inner chunk: small enough to live in registers/L1, a
// multiple of the smallest block size so chunks never straddle blocks.
constexpr size_t kChunk = 32;

template <typename T>
void quantize_typed(const typename T::Storage* x, size_t n, int blocksize,
                    const Format4Table& table, float* absmax, uint8_t* packed) {
  const int32_t zero = table.zero_code, negative_zero = table.negative_zero_code;
#if LOWBIT_CPU_AVX512 || LOWBIT_CPU_AVX2 || LOWBIT_CPU_NEON
  alignas(64) float mid16[16];
  alignas(64) int32_t code16[16];
  for (int k = 0; k < 16; ++k) {
    mid16[k] = k < 15 ? table.midpoint[size_t(k)] : std::numeric_limits<float>::infinity();
    code16[k] = table.sorted_code[size_t(k)];
  }
#endif
#if LOWBIT_CPU_AVX512
  const __m512 midpoints = _mm512_load_ps(mid16);
  const __m512i codes = _mm512_load_si512(code16);
#elif LOWBIT_CPU_AVX2
  const __m256 mid_low = _mm256_load_ps(mid16), mid_high = _mm256_load_ps(mid16 + 8);
  const __m256 code_low = _mm256_castsi256_ps(_mm256_load_si256(as_m256i(code16)));
  const __m256 code_high = _mm256_castsi256_ps(_mm256_load_si256(as_m256i(code16 + 8)));
#elif LOWBIT_CPU_NEON
  const LaneTable16 midpoints(mid16), codes(code16);
#endif
  for_each_block(n, blocksize, [&, zero, negative_zero](size_t b, size_t begin, size_t end) {
    const float m = block_absmax<T>(x, begin, end);
    absmax[b] = m;
    for (size_t c0 = begin; c0 < end; c0 += kChunk) {
      const size_t len = std::min(kChunk, end - c0);
      // r = x / m; 0 past the end (the padding nibble) and in an all-zero or
      // non-finite block (lb_absmax_scales).
      float r[kChunk] = {};
      if (lb_absmax_scales(m))
        for (size_t i = 0; i < len; ++i) r[i] = T::load(x[c0 + i]) / m;
      // Nearest code = number of midpoints strictly below r (ties go low);
      // a negative r that rounds to zero takes the format's -0 code.
      int32_t q[kChunk];
#if LOWBIT_CPU_AVX512
      // 16 values per step: a four-step binary search over the midpoints
      // held in a register (the 16th entry is +inf, never passed), then the
      // code by a register permute.
      for (size_t i = 0; i < kChunk; i += 16) {
        const __m512 v = _mm512_loadu_ps(r + i);
        __m512i pos = _mm512_setzero_si512();
        for (int step = 8; step > 0; step >>= 1) {
          const __m512i probe = _mm512_add_epi32(pos, _mm512_set1_epi32(step - 1));
          const __mmask16 above =
              _mm512_cmp_ps_mask(v, _mm512_permutexvar_ps(probe, midpoints), _CMP_GT_OQ);
          pos = _mm512_mask_add_epi32(pos, above, pos, _mm512_set1_epi32(step));
        }
        const __m512i c = _mm512_permutexvar_epi32(pos, codes);
        const __mmask16 negative_zero_lanes =
            _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(zero)) &
            _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
        _mm512_storeu_si512(q + i, _mm512_mask_mov_epi32(c, negative_zero_lanes,
                                                         _mm512_set1_epi32(negative_zero)));
      }
#elif LOWBIT_CPU_AVX2
      // The same search, 8 values per step.
      for (size_t i = 0; i < kChunk; i += 8) {
        const __m256 v = _mm256_loadu_ps(r + i);
        __m256i pos = _mm256_setzero_si256();
        for (int step = 8; step > 0; step >>= 1) {
          const __m256i probe = _mm256_add_epi32(pos, _mm256_set1_epi32(step - 1));
          const __m256 above = _mm256_cmp_ps(v, lookup16(mid_low, mid_high, probe), _CMP_GT_OQ);
          pos = _mm256_add_epi32(pos, _mm256_and_si256(_mm256_castps_si256(above),
                                                       _mm256_set1_epi32(step)));
        }
        const __m256i c = _mm256_castps_si256(lookup16(code_low, code_high, pos));
        const __m256i negative_zero_lanes = _mm256_and_si256(
            _mm256_cmpeq_epi32(c, _mm256_set1_epi32(zero)),
            _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i),
                            _mm256_blendv_epi8(c, _mm256_set1_epi32(negative_zero),
                                               negative_zero_lanes));
      }
#elif LOWBIT_CPU_NEON
      // The same search, 4 values per step, the tables looked up by bytes.
      for (size_t i = 0; i < kChunk; i += 4) {
        const float32x4_t v = vld1q_f32(r + i);
        uint32x4_t pos = vdupq_n_u32(0);
        for (uint32_t step = 8; step > 0; step >>= 1) {
          const uint32x4_t probe = vaddq_u32(pos, vdupq_n_u32(step - 1));
          const uint32x4_t above = vcgtq_f32(v, vreinterpretq_f32_u32(midpoints.lookup(probe)));
          pos = vaddq_u32(pos, vandq_u32(above, vdupq_n_u32(step)));
        }
        const uint32x4_t c = codes.lookup(pos);
        const uint32x4_t negative_zero_lanes =
            vandq_u32(vceqq_u32(c, vdupq_n_u32(uint32_t(zero))), vcltq_f32(v, vdupq_n_f32(0.0f)));
        const uint32x4_t minus_zero = vdupq_n_u32(uint32_t(negative_zero));
        vst1q_s32(q + i, vreinterpretq_s32_u32(vbslq_u32(negative_zero_lanes, minus_zero, c)));
      }
#else
      for (size_t i = 0; i < kChunk; ++i) {
        int pos = 0;
        for (int k = 0; k < 15; ++k) pos += r[i] > table.midpoint[size_t(k)] ? 1 : 0;
        const int32_t c = table.sorted_code[size_t(pos)];
        q[i] = (c == zero && r[i] < 0.0f) ? negative_zero : c;
      }
#endif
      for (size_t j = 0; j < (len + 1) / 2; ++j)
        packed[c0 / 2 + j] = uint8_t(q[2 * j] << 4 | q[2 * j + 1]);
    }
  });
}

template <typename T>
void dequantize_typed(const uint8_t* packed, const float* absmax, size_t n, int blocksize,
                      const Format4Table& table, typename T::Storage* out) {
  for_each_block(n, blocksize, [&](size_t b, size_t begin, size_t end) {
    // value[c] * absmax for the 16 codes: the same products an element-wise
    // decode computes, made once per block so the inner loop is two lookups.
    typename T::Storage lut[16];
    for (int c = 0; c < 16; ++c) lut[c] = T::store(table.value[c] * absmax[b]);
    const size_t pairs = (end - begin) / 2;
    const uint8_t* p = packed + begin / 2;
    typename T::Storage* o = out + begin;
    size_t j = 0;
#if LOWBIT_CPU_NEON
    if constexpr (std::is_same_v<T, F32>) {
      const PlaneTable16 values(table.value.data());
      const float32x4_t scale = vdupq_n_f32(absmax[b]);
      for (; j + 16 <= pairs; j += 16) decode_nibbles_scaled(values, p + j, scale, o + 2 * j);
    }
#endif
    for (; j < pairs; ++j) {
      o[2 * j] = lut[p[j] >> 4];
      o[2 * j + 1] = lut[p[j] & 15];
    }
    if ((end - begin) & 1) o[2 * pairs] = lut[p[pairs] >> 4];
  });
}

}  // namespace

void quantize_4bit(const void* x, DType x_type, size_t n, int blocksize, Format4 format,
                   float* absmax, uint8_t* packed) {
  const Format4Table& table = format4_table(format);
  dispatch_float(x_type, [&](auto tag) {
    using T = decltype(tag);
    quantize_typed<T>(static_cast<const typename T::Storage*>(x), n, blocksize, table, absmax,
                      packed);
  });
}

void dequantize_4bit(const uint8_t* packed, const float* absmax, size_t n, int blocksize,
                     Format4 format, void* out, DType out_type) {
  const Format4Table& table = format4_table(format);
  dispatch_float(out_type, [&](auto tag) {
    using T = decltype(tag);
    dequantize_typed<T>(packed, absmax, n, blocksize, table, static_cast<typename T::Storage*>(out));
  });
}

LOWBIT_CPU_ISA_END
