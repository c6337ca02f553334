// y = W x for one token: memory-bound, so the loop reads each packed byte once
// and decodes 2·L codes per step with an in-register 16-entry table (AVX-512
// permutexvar, L = 16; AVX2 byte-plane vpshufb lookups, L = 16 as two 8-lane
// vectors; NEON byte-plane table lookups, L = 16 as four 4-lane vectors). x is
// rearranged once per call so that every group of 2·L values sits in the
// order the decoded values come out in (slot_element). Products are summed
// per block and scaled once per block.
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul_4bit.h"
#include "kernels/cpu/element_io.h"
#include "kernels/cpu/neon_tables.h"
#include "kernels/cpu_isa.h"

LOWBIT_CPU_ISA_BEGIN
namespace {

#if LOWBIT_CPU_AVX2
constexpr size_t kLanes = 16;
#elif LOWBIT_CPU_NEON
constexpr size_t kLanes = 16;
#else
constexpr size_t kLanes = 0;
#endif

#if LOWBIT_CPU_AVX2 || LOWBIT_CPU_NEON

constexpr size_t kGroup = 2 * kLanes;  // values per step: L packed bytes

// The element of a group of 2·L values whose decoded weight lands in slot i of
// the decode's (even, odd) vectors: byte j of the group holds elements 2j (high
// nibble) and 2j + 1 (low nibble).
size_t slot_element(size_t i) {
#if LOWBIT_CPU_AVX2 && !LOWBIT_CPU_AVX512
  // Four 8-lane vectors (even = 0-1, odd = 2-3): vector q holds the high
  // nibbles of bytes 4q .. 4q + 3 in slots 0-3, their low nibbles in 4-7.
  const size_t q = i / 8, s = i % 8;
  return s < 4 ? 2 * (4 * q + s) : 2 * (4 * q + s - 4) + 1;
#else
  return i < kLanes ? 2 * i : 2 * (i - kLanes) + 1;
#endif
}

// xp[g·2L + i] = x[g·2L + slot_element(i)].
template <typename T>
void deinterleave(const typename T::Storage* x, size_t n, float* xp) {
  size_t element[kGroup];
  for (size_t i = 0; i < kGroup; ++i) element[i] = slot_element(i);
  for (size_t g = 0; g < n; g += kGroup)
    for (size_t i = 0; i < kGroup; ++i) xp[g + i] = T::load(x[g + element[i]]);
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
// 16 lanes as two 8-lane vectors.
struct VecF {
  __m256 v[2];
};
inline VecF vzero() { return {{_mm256_setzero_ps(), _mm256_setzero_ps()}}; }
inline VecF vload(const float* p) { return {{_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}}; }
inline VecF vfma(VecF a, VecF b, VecF c) {
  return {{_mm256_fmadd_ps(a.v[0], b.v[0], c.v[0]), _mm256_fmadd_ps(a.v[1], b.v[1], c.v[1])}};
}
inline VecF vadd(VecF a, VecF b) {
  return {{_mm256_add_ps(a.v[0], b.v[0]), _mm256_add_ps(a.v[1], b.v[1])}};
}
inline VecF vset(float s) { return {{_mm256_set1_ps(s), _mm256_set1_ps(s)}}; }
inline float vsum(VecF a) { return lane_sum(_mm256_add_ps(a.v[0], a.v[1])); }

struct Table {
  __m256i plane[4];  // byte k of the 16 values, in both 128-bit lanes
  explicit Table(const float* v) {
    alignas(16) uint8_t bytes[4][16];
    for (int c = 0; c < 16; ++c) {
      uint8_t b[4];
      std::memcpy(b, v + c, 4);
      for (int k = 0; k < 4; ++k) bytes[k][c] = b[k];
    }
    for (int k = 0; k < 4; ++k)
      plane[k] = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(bytes[k])));
  }
  // 16 bytes, twice: the high nibbles index in the low 128-bit lane, the low
  // nibbles in the high one. vpshufb looks each byte plane up, and two rounds
  // of unpacking join the planes into floats (see slot_element).
  void decode(const uint8_t* p, VecF& even, VecF& odd) const {
    const __m256i bytes =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i idx = _mm256_and_si256(
        _mm256_srlv_epi32(bytes, _mm256_setr_epi32(4, 4, 4, 4, 0, 0, 0, 0)), _mm256_set1_epi8(15));
    __m256i b[4];
    for (int k = 0; k < 4; ++k) b[k] = _mm256_shuffle_epi8(plane[k], idx);
    const __m256i lo01 = _mm256_unpacklo_epi8(b[0], b[1]), hi01 = _mm256_unpackhi_epi8(b[0], b[1]);
    const __m256i lo23 = _mm256_unpacklo_epi8(b[2], b[3]), hi23 = _mm256_unpackhi_epi8(b[2], b[3]);
    even.v[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(lo01, lo23));
    even.v[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(lo01, lo23));
    odd.v[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(hi01, hi23));
    odd.v[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(hi01, hi23));
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
// `ahead` (x86): prefetch_each_line.
float row_dot(const Weight4bitView& w, const Table& table, size_t o, const float* xp,
              bool ahead) {
  const size_t in = w.in_features;
  const size_t f0 = o * in;
  const uint8_t* p = w.packed + f0 / 2;
  VecF acc = vzero();
#if LOWBIT_CPU_AVX512
  // Rows of whole blocks: the scales of 16 blocks at a time are one vector,
  // and each block takes its own by one permute.
  const size_t bs = size_t(1) << w.block_shift;
  if (in % bs == 0) {
    const size_t blocks = in / bs, b0 = f0 >> w.block_shift;
    for (size_t g = 0; g < blocks; g += 16) {
      const size_t n = std::min<size_t>(16, blocks - g);
      const __m512 s16 = block_scales16(w, b0 + g, __mmask16((1u << n) - 1));
      __m512i lane = _mm512_setzero_si512();
      for (size_t k = g * bs; k < (g + n) * bs; k += bs) {
        VecF even_sum = vzero(), odd_sum = vzero();
        for (size_t c = k; c < k + bs; c += kGroup) {
          prefetch_each_line(ahead, p, c);
          VecF even, odd;
          table.decode(p + c / 2, even, odd);
          even_sum = vfma(even, vload(xp + c), even_sum);
          odd_sum = vfma(odd, vload(xp + c + kLanes), odd_sum);
        }
        acc = vfma(vadd(even_sum, odd_sum), _mm512_permutexvar_ps(lane, s16), acc);
        lane = _mm512_add_epi32(lane, _mm512_set1_epi32(1));
      }
    }
    return vsum(acc);
  }
#endif
  for (size_t k = 0; k < in;) {
    const size_t b = (f0 + k) >> w.block_shift;
    const size_t end = std::min(in, ((b + 1) << w.block_shift) - f0);
    VecF even_sum = vzero(), odd_sum = vzero();
    for (; k < end; k += kGroup) {
#if LOWBIT_CPU_AVX2
      prefetch_each_line(ahead, p, k);
#else
      (void)ahead;
#endif
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
  const bool ahead = cpu_prefetch_weights();
  // Rows are handed out in chunks as threads free up: a thread that loses its
  // core for a while (a shared machine) does not hold the others back.
#pragma omp parallel for schedule(dynamic, 64)
  for (ptrdiff_t o = 0; o < rows; ++o) {
    float v = row_dot(w, table, size_t(o), xv, ahead);
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
