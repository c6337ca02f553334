// y ≈ W x for one token with integer dot products, in the manner of
// llama.cpp's 4-bit x 8-bit kernels: an opt-in approximation of gemv_4bit for
// generation and evaluation (training keeps the exact path). The slice of x
// under each weight block is quantized to int8 with a scale of its own
// (max |x| / 127, rounded to nearest), the format's 16 code values to int8
// (value / max |value| * 127), and each block's dot product is exact integer
// arithmetic, scaled once in float. The nibbles become int8 values by one
// vpshufb each. AVX2 multiplies bytes with vpmaddubsw (|w| times x with w's
// sign, so no pair of products can saturate its int16 sum: 2 * 127 * 127 <
// 2^15). The AVX-512 path adds four products at a time into int32 with VNNI's
// vpdpbusd, which cannot saturate: its weights are biased to w + 128 (an
// unsigned byte, no sign fix-up), 128 times the block's sum of x codes is
// subtracted once per block, and 512-bit vectors take 128 weights per step
// (rows of 64-value blocks whose length is not a multiple of 128 take the
// 256-bit loop). The bound on the error is in kernels/backend.h. Other paths,
// and blocks that are not a multiple of 64 values, run the exact gemv: a
// scalar integer loop measured slower than its vector loop.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/element_io.h"
#include "kernels/cpu/matmul_4bit.h"
#include "kernels/cpu_isa.h"

LOWBIT_CPU_ISA_BEGIN
#if LOWBIT_CPU_AVX2
namespace {

// A weight block's x codes, scale, and, where `bias` is given (the AVX-512
// loop), 128 times the sum of its codes. Each `group` values (64, or 128 for
// the AVX-512 loop) are stored as their even-indexed values, then the odd
// ones: a packed byte holds an even value's code in its high nibble and the
// next value's in its low nibble, so the two nibble planes of group / 2 bytes
// meet their activations in two contiguous loads.
template <typename T>
void quantize_x(const typename T::Storage* x, size_t in, size_t bs, size_t group, int8_t* codes,
                float* scale, int32_t* bias) {
  std::vector<float> v(bs);
  for (size_t b0 = 0, b = 0; b0 < in; b0 += bs, ++b) {
    float m = 0.0f;
    bool finite = true;
    for (size_t i = 0; i < bs; ++i) {
      v[i] = T::load(x[b0 + i]);
      finite = finite && std::isfinite(v[i]);
      m = std::max(m, std::fabs(v[i]));
    }
    // A block holding inf or NaN gets codes 0 (converting NaN to an integer
    // is undefined) and a NaN scale: its rows' outputs are NaN.
    const float inv = finite && m > 0.0f ? 127.0f / m : 0.0f;
    scale[b] = finite ? m / 127.0f : std::numeric_limits<float>::quiet_NaN();
    int32_t sum = 0;
    for (size_t i = 0; i < bs; ++i) {
      const size_t f = b0 + i, r = f % group;  // in is a multiple of group
      const int8_t c = finite ? int8_t(std::nearbyint(v[i] * inv)) : int8_t(0);
      codes[f - r + (r % 2) * (group / 2) + r / 2] = c;
      sum += c;
    }
    if (bias) bias[b] = 128 * sum;
  }
}

// 64 weights (32 packed bytes) times their 64 x codes (even ones first),
// added to the eight int32 lanes of acc.
inline __m256i dot64(const uint8_t* p, const int8_t* xc, __m256i table, __m256i acc) {
  const __m256i low4 = _mm256_set1_epi8(15);
  const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i even = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4));
  const __m256i odd = _mm256_shuffle_epi8(table, _mm256_and_si256(bytes, low4));
  const __m256i xe = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xc));
  const __m256i xo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xc + 32));
  const __m256i ae = _mm256_abs_epi8(even), se = _mm256_sign_epi8(xe, even);
  const __m256i ao = _mm256_abs_epi8(odd), so = _mm256_sign_epi8(xo, odd);
#if LOWBIT_CPU_AVX512
  return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(acc, ae, se), ao, so);
#else
  const __m256i ones = _mm256_set1_epi16(1);
  acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ae, se), ones));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ao, so), ones));
#endif
}

// Row o: blocks of bs values (a multiple of 64), whole inside the row. `xsu`:
// unit times each block's x scale; `ahead`: prefetch_each_line.
// (Each block's scale stays a scalar broadcast: vector permutes of eight
// gathered scales measured slower.)
// (No vector crosses this function's boundary: under clang the OpenMP loop
// that calls it is outlined into a function the ISA region's target
// attribute does not reach.)
float row_dot(const Weight4bitView& w, size_t o, const int8_t* xc, const float* xsu,
              const int8_t* codes, bool ahead) {
  const __m256i table =
      _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(codes)));
  const size_t in = w.in_features, bs = size_t(1) << w.block_shift;
  const uint8_t* p = w.packed + o * in / 2;
  const size_t b0 = (o * in) >> w.block_shift;
  __m256 acc = _mm256_setzero_ps();
  for (size_t k = 0, j = 0; k < in; k += bs, ++j) {
    __m256i sums = _mm256_setzero_si256();
    for (size_t c = 0; c < bs; c += 64) {
      prefetch_each_line(ahead, p, k + c);
      sums = dot64(p + (k + c) / 2, xc + k + c, table, sums);
    }
    const __m256 s = _mm256_set1_ps(w.scale(b0 + j) * xsu[j]);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), s, acc);
  }
  return lane_sum(acc);
}

#if LOWBIT_CPU_AVX512
// 128 weights (64 packed bytes) times their 128 x codes (even ones first):
// sum over its 4 products of (w + 128) * x into each int32 lane; lanes 0-7
// take bytes 0-31 (the first 64 weights), lanes 8-15 the rest. `table`: the
// biased code values, in every 128-bit lane.
inline __m512i dot128(const uint8_t* p, const int8_t* xc, __m512i table, __m512i acc) {
  const __m512i low4 = _mm512_set1_epi8(15);
  const __m512i bytes = _mm512_loadu_si512(p);
  const __m512i even = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4));
  const __m512i odd = _mm512_shuffle_epi8(table, _mm512_and_si512(bytes, low4));
  acc = _mm512_dpbusd_epi32(acc, even, _mm512_loadu_si512(xc));
  return _mm512_dpbusd_epi32(acc, odd, _mm512_loadu_si512(xc + 64));
}

// row_dot with 512-bit vectors: x codes in groups of 128, in % 128 == 0;
// `biased`: the 16 code values + 128 (16-byte aligned); `xsu`: unit times the
// blocks' x scales (zeros up to a multiple of 16). Blocks of 64 go two per
// step (lanes 0-7 and 8-15): `xbias` holds per step the two blocks' biases,
// negated, in lanes 0 and 8 (the sums start from them), and the scales of 16
// blocks are one vector whose lanes each step takes by one permute. Larger
// blocks go one per step, with `xbias` per block.
float row_dot_wide(const Weight4bitView& w, size_t o, const int8_t* xc, const float* xsu,
                   const int32_t* xbias, const uint8_t* biased, bool ahead) {
  const __m512i table =
      _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(biased)));
  const size_t in = w.in_features, bs = size_t(1) << w.block_shift;
  const uint8_t* p = w.packed + o * in / 2;
  const size_t b0 = (o * in) >> w.block_shift;
  __m512 acc = _mm512_setzero_ps();
  if (bs == 64) {
    const size_t steps = in / 128;
    for (size_t g = 0; g < steps; g += 8) {  // 8 steps, 16 blocks
      const size_t n = std::min<size_t>(8, steps - g);
      const __mmask16 m = __mmask16((1u << (2 * n)) - 1);
      const __m512 s16 =
          _mm512_mul_ps(block_scales16(w, b0 + 2 * g, m), _mm512_loadu_ps(xsu + 2 * g));
      __m512i lane = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
      for (size_t t = g; t < g + n; ++t) {
        if (ahead) prefetch_ahead(p + t * 64);
        const __m512i start = _mm512_loadu_si512(xbias + 16 * t);
        const __m512i sums = dot128(p + t * 64, xc + t * 128, table, start);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_permutexvar_ps(lane, s16), acc);
        lane = _mm512_add_epi32(lane, _mm512_set1_epi32(2));
      }
    }
  } else {
    for (size_t k = 0, j = 0; k < in; k += bs, ++j) {
      __m512i sums = _mm512_setzero_si512();
      for (size_t c = 0; c < bs; c += 128) {
        if (ahead) prefetch_ahead(p + (k + c) / 2);
        sums = dot128(p + (k + c) / 2, xc + k + c, table, sums);
      }
      sums = _mm512_mask_sub_epi32(sums, 1, sums, _mm512_set1_epi32(xbias[j]));
      const __m512 s = _mm512_set1_ps(w.scale(b0 + j) * xsu[j]);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), s, acc);
    }
  }
  return _mm512_reduce_add_ps(acc);
}
#endif

template <typename T>
void gemv_int8(const typename T::Storage* x, const Weight4bitView& w,
               const typename T::Storage* bias, typename T::Storage* y) {
  const size_t in = w.in_features, bs = size_t(1) << w.block_shift, blocks = in / bs;
  // The code values as int8, and the float one int8 step stands for.
  float vmax = 0.0f;
  for (int c = 0; c < 16; ++c) vmax = std::max(vmax, std::fabs(w.value[c]));
  alignas(16) int8_t table[16];
  for (int c = 0; c < 16; ++c) table[c] = int8_t(std::nearbyint(w.value[c] / vmax * 127.0f));
  const float unit = vmax / 127.0f;
#if LOWBIT_CPU_AVX512
  alignas(16) uint8_t biased[16];  // the 512-bit loop's unsigned form, once per call
  for (int c = 0; c < 16; ++c) biased[c] = uint8_t(table[c] + 128);
#endif
  // This thread's buffers, shared with the team: x's codes, its blocks'
  // scales (times unit below; zeros up to a multiple of 16), and for the
  // 512-bit loop the blocks' biases (for blocks of 64 in its per-step layout).
  thread_local std::vector<int8_t> codes;
  thread_local std::vector<float> scales;
  codes.resize(in);
  scales.assign((blocks + 15) / 16 * 16, 0.0f);
#if LOWBIT_CPU_AVX512
  const bool wide = in % 128 == 0;
  thread_local std::vector<int32_t> biases, step_biases;
  biases.resize(wide ? blocks : 0);
  const int32_t* xb = wide ? biases.data() : nullptr;
  quantize_x<T>(x, in, bs, wide ? 128 : 64, codes.data(), scales.data(),
                wide ? biases.data() : nullptr);
#else
  quantize_x<T>(x, in, bs, 64, codes.data(), scales.data(), nullptr);
#endif
  for (size_t j = 0; j < blocks; ++j) scales[j] *= unit;
#if LOWBIT_CPU_AVX512
  if (wide && bs == 64) {  // lanes 0 and 8 of step t: blocks 2t and 2t + 1, negated
    step_biases.assign(in / 128 * 16, 0);
    for (size_t t = 0; t < in / 128; ++t) {
      step_biases[16 * t] = -biases[2 * t];
      step_biases[16 * t + 8] = -biases[2 * t + 1];
    }
    xb = step_biases.data();
  }
#endif
  const int8_t* xc = codes.data();
  const float* xs = scales.data();
  const ptrdiff_t rows = ptrdiff_t(w.out_features);
  const bool ahead = cpu_prefetch_weights();
#pragma omp parallel for schedule(dynamic, 64)
  for (ptrdiff_t o = 0; o < rows; ++o) {
#if LOWBIT_CPU_AVX512
    float v = wide ? row_dot_wide(w, size_t(o), xc, xs, xb, biased, ahead)
                   : row_dot(w, size_t(o), xc, xs, table, ahead);
#else
    float v = row_dot(w, size_t(o), xc, xs, table, ahead);
#endif
    if (bias) v += T::load(bias[o]);
    y[o] = T::store(v);
  }
}

}  // namespace
#endif

void gemv_4bit_int8(const void* x, const Weight4bitView& w, const void* bias, void* y,
                    DType dtype) {
#if LOWBIT_CPU_AVX2
  const size_t bs = size_t(1) << w.block_shift;
  if (bs % 64 == 0 && w.in_features % bs == 0) {
    dispatch_float(dtype, [&](auto tag) {
      using T = decltype(tag);
      using S = typename T::Storage;
      gemv_int8<T>(static_cast<const S*>(x), w, static_cast<const S*>(bias), static_cast<S*>(y));
    });
    return;
  }
#endif
  gemv_4bit(x, w, bias, y, dtype);
}

LOWBIT_CPU_ISA_END
