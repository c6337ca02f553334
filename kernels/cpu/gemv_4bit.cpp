// y = W x for one token: memory-bound, so the loop reads each packed byte once
// and decodes 2·L codes per step with an in-register 16-entry table (AVX-512
// permutexvar, L = 16; AVX2 two permutevar8x32 + blend, L = 8; NEON byte-plane
// table lookups, L = 16 as four 4-lane vectors). x is
// rearranged once per call so that the even and the odd elements of every
// group of 2·L sit in two contiguous vectors, matching the high and the low
// nibbles of L bytes. Products are summed per block and scaled once per block.
#include <vector>

#include "kernels/cpu/matmul_4bit.h"
#include "kernels/cpu/element_io.h"
#include "kernels/cpu/neon_tables.h"

LOWBIT_CPU_ISA_BEGIN
namespace {

#if LOWBIT_CPU_AVX512
constexpr size_t kLanes = 16;
#elif LOWBIT_CPU_AVX2
constexpr size_t kLanes = 8;
#elif LOWBIT_CPU_NEON
constexpr size_t kLanes = 16;
#else
constexpr size_t kLanes = 0;
#endif

#if LOWBIT_CPU_AVX2 || LOWBIT_CPU_NEON

constexpr size_t kGroup = 2 * kLanes;  // values per step: L packed bytes

// xp[g·2L + j] = x[g·2L + 2j], xp[g·2L + L + j] = x[g·2L + 2j + 1].
template <typename T>
void deinterleave(const typename T::Storage* x, size_t n, float* xp) {
  for (size_t g = 0; g < n; g += kGroup)
    for (size_t j = 0; j < kLanes; ++j) {
      xp[g + j] = T::load(x[g + 2 * j]);
      xp[g + kLanes + j] = T::load(x[g + 2 * j + 1]);
    }
}

#if LOWBIT_CPU_AVX512
using VecF = __m512;
inline VecF vzero() { return _mm512_setzero_ps(); }
inline VecF vload(const float* p) { return _mm512_loadu_ps(p); }
inline VecF vfma(VecF a, VecF b, VecF c) { return _mm512_fmadd_ps(a, b, c); }
inline VecF vadd(VecF a, VecF b) { return _mm512_add_ps(a, b); }
inline VecF vset(float s) { return _mm512_set1_ps(s); }
inline float vsum(VecF a) { return _mm512_reduce_add_ps(a); }

struct Table {
  __m512 values;
  explicit Table(const float* v) : values(_mm512_loadu_ps(v)) {}
  // Decodes L bytes into the values of their high (even) and low (odd)
  // nibbles. permutexvar reads only an index's low 4 bits, so the byte itself
  // indexes its low nibble.
  void decode(const uint8_t* p, VecF& even, VecF& odd) const {
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    even = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), values);
    odd = _mm512_permutexvar_ps(b, values);
  }
};
#elif LOWBIT_CPU_AVX2
using VecF = __m256;
inline VecF vzero() { return _mm256_setzero_ps(); }
inline VecF vload(const float* p) { return _mm256_loadu_ps(p); }
inline VecF vfma(VecF a, VecF b, VecF c) { return _mm256_fmadd_ps(a, b, c); }
inline VecF vadd(VecF a, VecF b) { return _mm256_add_ps(a, b); }
inline VecF vset(float s) { return _mm256_set1_ps(s); }
inline float vsum(VecF a) { return lane_sum(a); }

struct Table {
  __m256 lo, hi;  // codes 0-7 and 8-15
  explicit Table(const float* v) : lo(_mm256_loadu_ps(v)), hi(_mm256_loadu_ps(v + 8)) {}
  // permutevar8x32 reads the index's low 3 bits; bit 3, moved to the sign
  // bit, picks the upper half; higher bits are ignored, so a whole byte
  // indexes its low nibble.
  VecF lookup(__m256i idx) const {
    const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                            upper);
  }
  void decode(const uint8_t* p, VecF& even, VecF& odd) const {
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    even = lookup(_mm256_srli_epi32(b, 4));
    odd = lookup(b);
  }
};
#elif LOWBIT_CPU_NEON
// 16 lanes as four NEON vectors: one 16-byte load of codes feeds 32 values.
struct VecF {
  float32x4_t v[4];
};
inline VecF vzero() { return {{vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)}}; }
inline VecF vload(const float* p) {
  return {{vld1q_f32(p), vld1q_f32(p + 4), vld1q_f32(p + 8), vld1q_f32(p + 12)}};
}
inline VecF vfma(VecF a, VecF b, VecF c) {
  for (int q = 0; q < 4; ++q) c.v[q] = vfmaq_f32(c.v[q], a.v[q], b.v[q]);
  return c;
}
inline VecF vadd(VecF a, VecF b) {
  for (int q = 0; q < 4; ++q) a.v[q] = vaddq_f32(a.v[q], b.v[q]);
  return a;
}
inline VecF vset(float s) {
  const float32x4_t v = vdupq_n_f32(s);
  return {{v, v, v, v}};
}
inline float vsum(VecF a) {
  return vaddvq_f32(vaddq_f32(vaddq_f32(a.v[0], a.v[1]), vaddq_f32(a.v[2], a.v[3])));
}

struct Table {
  PlaneTable16 values;
  explicit Table(const float* v) : values(v) {}
  void decode(const uint8_t* p, VecF& even, VecF& odd) const {
    const uint8x16_t b = vld1q_u8(p);
    uint32x4_t e[4], o[4];
    values.lookup(vshrq_n_u8(b, 4), e);
    values.lookup(vandq_u8(b, vdupq_n_u8(15)), o);
    for (int q = 0; q < 4; ++q) {
      even.v[q] = vreinterpretq_f32_u32(e[q]);
      odd.v[q] = vreinterpretq_f32_u32(o[q]);
    }
  }
};
#endif

// Row o of W times xp. Rows start on a group boundary (in % 2L == 0) and
// blocks hold whole groups (blocksize >= 32 >= 2L), so no group straddles a block.
float row_dot(const Weight4bitView& w, const Table& table, size_t o, const float* xp) {
  const size_t in = w.in_features;
  const size_t f0 = o * in;
  const uint8_t* p = w.packed + f0 / 2;
  VecF acc = vzero();
  for (size_t k = 0; k < in;) {
    const size_t b = (f0 + k) >> w.block_shift;
    const size_t end = std::min(in, ((b + 1) << w.block_shift) - f0);
    VecF even_sum = vzero(), odd_sum = vzero();
    for (; k < end; k += kGroup) {
      VecF even, odd;
      table.decode(p + k / 2, even, odd);
      even_sum = vfma(even, vload(xp + k), even_sum);
      odd_sum = vfma(odd, vload(xp + k + kLanes), odd_sum);
    }
    acc = vfma(vadd(even_sum, odd_sum), vset(w.scale(b)), acc);
  }
  return vsum(acc);
}

template <typename T>
void gemv_vectorised(const typename T::Storage* x, const Weight4bitView& w,
                     const typename T::Storage* bias, typename T::Storage* y) {
  thread_local std::vector<float> xp;
  xp.resize(w.in_features);
  deinterleave<T>(x, w.in_features, xp.data());
  const float* xv = xp.data();  // this thread's buffer, shared with the team
  const Table table(w.value);
  const ptrdiff_t rows = ptrdiff_t(w.out_features);
  // Rows are handed out in chunks as threads free up: a thread that loses its
  // core for a while (a shared machine) does not hold the others back.
#pragma omp parallel for schedule(dynamic, 64)
  for (ptrdiff_t o = 0; o < rows; ++o) {
    float v = row_dot(w, table, size_t(o), xv);
    if (bias) v += T::load(bias[o]);
    y[o] = T::store(v);
  }
}

#endif

}  // namespace

bool gemv_4bit_vectorised(size_t in_features) {
  return kLanes > 0 && in_features % (2 * kLanes) == 0;
}

void gemv_4bit(const void* x, const Weight4bitView& w, const void* bias, void* y, DType dtype) {
#if LOWBIT_CPU_AVX2 || LOWBIT_CPU_NEON
  if (gemv_4bit_vectorised(w.in_features)) {
    dispatch_float(dtype, [&](auto tag) {
      using T = decltype(tag);
      using S = typename T::Storage;
      gemv_vectorised<T>(static_cast<const S*>(x), w, static_cast<const S*>(bias),
                         static_cast<S*>(y));
    });
    return;
  }
#endif
  gemm_4bit(x, 1, w, bias, y, dtype);
}

LOWBIT_CPU_ISA_END
