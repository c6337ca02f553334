#include "kernels/cpu/encoder8.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>

#include "kernels/codebook.h"

namespace lowbit::kernels::cpu {
namespace {

float key_to_float(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

Encoder8::Encoder8(const float* code) : start_(kBuckets + 3), fast_(true) {
  std::copy(code, code + 256, code_.begin());
  for (int i = 0; i < 255; ++i) mid_[i] = code_midpoint(code, i);
  mid_[255] = std::numeric_limits<float>::infinity();
  const float* mid_begin = mid_.data();
  const float* mid_end = mid_begin + 255;
  for (size_t b = 0; b < kBuckets; ++b) {
    const float lo = key_to_float(uint32_t(b) << kShift);
    const float hi = key_to_float(uint32_t(((b + 1) << kShift) - 1));
    if (std::isnan(lo) || std::isnan(hi)) continue;  // NaN buckets: never a finite r
    const auto below = std::lower_bound(mid_begin, mid_end, lo) - mid_begin;
    const auto upto = std::upper_bound(mid_begin, mid_end, hi) - mid_begin;
    start_[b] = uint8_t(below);
    if (upto - below > 1) fast_ = false;  // two midpoints in one bucket: search instead
  }
}

int Encoder8::encode_search(float r) const {
  int pos = 0;
  for (int step = 128; step > 0; step >>= 1) pos += (r > mid_[pos + step - 1]) ? step : 0;
  return pos;
}

void Encoder8::encode_scaled(const float* x, float absmax, uint8_t* codes, size_t n) const {
  size_t i = 0;
#ifdef __AVX512F__
  if (fast_) {
    const __m512 m = _mm512_set1_ps(absmax);
    const __m512i sign = _mm512_set1_epi32(int(0x80000000u));
    const __m512i ones = _mm512_set1_epi32(-1);
    const __m512i low_byte = _mm512_set1_epi32(0xff);
    const __m512i one = _mm512_set1_epi32(1);
    for (; i + 16 <= n; i += 16) {
      const __m512 r = _mm512_div_ps(_mm512_loadu_ps(x + i), m);
      const __m512i u = _mm512_castps_si512(r);
      const __mmask16 negative = _mm512_cmplt_epi32_mask(u, _mm512_setzero_si512());
      const __m512i key = _mm512_mask_xor_epi32(_mm512_or_si512(u, sign), negative, u, ones);
      const __m512i bucket = _mm512_srli_epi32(key, kShift);
      const __m512i start =
          _mm512_and_si512(_mm512_i32gather_epi32(bucket, start_.data(), 1), low_byte);
      const __m512 mid = _mm512_i32gather_ps(start, mid_.data(), 4);
      const __mmask16 above = _mm512_cmp_ps_mask(r, mid, _CMP_GT_OQ);
      const __m512i pos = _mm512_mask_add_epi32(start, above, start, one);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm512_cvtepi32_epi8(pos));
    }
  }
#endif
  for (; i < n; ++i) codes[i] = uint8_t(encode(x[i] / absmax));
}

const Encoder8& Encoder8::for_code(const float* code) {
  static std::mutex mutex;
  static std::map<std::array<float, 256>, std::unique_ptr<Encoder8>> cache;
  std::array<float, 256> key;
  std::copy(code, code + 256, key.begin());
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[key];
  if (!slot) slot = std::make_unique<Encoder8>(code);
  return *slot;
}

}  // namespace lowbit::kernels::cpu
