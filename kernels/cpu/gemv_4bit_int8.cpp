// y ≈ W x for one token with integer dot products, in the manner of
// llama.cpp's 4-bit x 8-bit kernels: an opt-in approximation of gemv_4bit for
// generation and evaluation (training keeps the exact path). The slice of x
// under each weight block is quantized to int8 with a scale of its own
// (max |x| / 127, rounded to nearest), the format's 16 code values to int8
// (value / max |value| * 127), and each block's dot product is exact integer
// arithmetic, scaled once in float. Vector paths: AVX2 multiplies bytes with
// vpmaddubsw (|w| times x with w's sign, so no pair of products can saturate
// its int16 sum: 2 * 127 * 127 < 2^15), the AVX-512 path adds four products
// at a time with VNNI's vpdpbusd; the nibbles become int8 values by one
// vpshufb each. The bound on the error is in kernels/backend.h. Other paths,
// and blocks that are not a multiple of 64 values, run the exact gemv: a
// scalar integer loop measured slower than its vector loop.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/element_io.h"
#include "kernels/cpu/matmul_4bit.h"

LOWBIT_CPU_ISA_BEGIN
#if LOWBIT_CPU_AVX2
namespace {

// A weight block's x codes and scale. Each 64 values of a block are stored as
// their 32 even-indexed values, then the 32 odd ones: a packed byte holds an
// even value's code in its high nibble and the next value's in its low
// nibble, so the two nibble planes of 32 bytes meet their activations in two
// contiguous loads.
template <typename T>
void quantize_x(const typename T::Storage* x, size_t in, size_t bs, int8_t* codes, float* scale) {
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
    int8_t* c = codes + b0;
    for (size_t i = 0; i < bs; ++i)
      c[(i / 64) * 64 + (i % 2) * 32 + (i % 64) / 2] =
          finite ? int8_t(std::nearbyint(v[i] * inv)) : int8_t(0);
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

// Row o: blocks of bs values (a multiple of 64), whole inside the row.
// (No vector crosses this function's boundary: under clang the OpenMP loop
// that calls it is outlined into a function the ISA region's target
// attribute does not reach.)
float row_dot(const Weight4bitView& w, size_t o, const int8_t* xc, const float* xs,
              const int8_t* codes, float unit) {
  const __m256i table =
      _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(codes)));
  const size_t in = w.in_features, bs = size_t(1) << w.block_shift;
  const uint8_t* p = w.packed + o * in / 2;
  const size_t b0 = (o * in) >> w.block_shift;
  __m256 acc = _mm256_setzero_ps();
  for (size_t k = 0, j = 0; k < in; k += bs, ++j) {
    __m256i sums = _mm256_setzero_si256();
    for (size_t c = 0; c < bs; c += 64) sums = dot64(p + (k + c) / 2, xc + k + c, table, sums);
    const float s = w.scale(b0 + j) * unit * xs[j];
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(s), acc);
  }
  return lane_sum(acc);
}

template <typename T>
void gemv_int8(const typename T::Storage* x, const Weight4bitView& w,
               const typename T::Storage* bias, typename T::Storage* y) {
  const size_t in = w.in_features, bs = size_t(1) << w.block_shift;
  // The code values as int8, and the float one int8 step stands for.
  float vmax = 0.0f;
  for (int c = 0; c < 16; ++c) vmax = std::max(vmax, std::fabs(w.value[c]));
  alignas(16) int8_t table[16];
  for (int c = 0; c < 16; ++c) table[c] = int8_t(std::nearbyint(w.value[c] / vmax * 127.0f));
  const float unit = vmax / 127.0f;
  thread_local std::vector<int8_t> codes;
  thread_local std::vector<float> scales;
  codes.resize(in);
  scales.resize(in / bs);
  quantize_x<T>(x, in, bs, codes.data(), scales.data());
  const int8_t* xc = codes.data();  // this thread's buffers, shared with the team
  const float* xs = scales.data();
  const ptrdiff_t rows = ptrdiff_t(w.out_features);
#pragma omp parallel for schedule(dynamic, 64)
  for (ptrdiff_t o = 0; o < rows; ++o) {
    float v = row_dot(w, size_t(o), xc, xs, table, unit);
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
