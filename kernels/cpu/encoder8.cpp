#include "kernels/cpu/encoder8.h"

#include "kernels/cpu/x86_intrinsics.h"

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

Encoder8::Encoder8(const float* code) : start_(size_t(1) << (32 - kShift)), fast_(true) {
  std::copy(code, code + 256, code_.begin());
  for (int i = 0; i < 255; ++i) mid_[i] = code_midpoint(code, i);
  mid_[255] = std::numeric_limits<float>::infinity();
  const float* mid_begin = mid_.data();
  const float* mid_end = mid_begin + 255;
  for (size_t b = 0; b < start_.size(); ++b) {
    const float lo = key_to_float(uint32_t(b) << kShift);
    const float hi = key_to_float(uint32_t(((b + 1) << kShift) - 1));
    if (std::isnan(lo) || std::isnan(hi)) continue;  // NaN buckets: never a finite r
    const auto below = std::lower_bound(mid_begin, mid_end, lo) - mid_begin;
    const auto upto = std::upper_bound(mid_begin, mid_end, hi) - mid_begin;
    start_[b] = uint8_t(below);
    if (upto - below > 1) fast_ = false;  // two midpoints in one bucket: search instead
  }
  if (!fast_) return;
  for (int i = 0; i < 255; ++i)
    if (std::fabs(mid_[i]) < 0x1p-23f) return;
  packed_.resize(2 * kPackedCount);
  for (uint32_t negative = 0; negative < 2; ++negative)
    for (uint32_t j = 0; j < kPackedCount; ++j) {
      const uint32_t low_bits = (kPackedLow + j) << kShift;
      float a0, a1;
      const uint32_t high_bits = low_bits | ((1u << kShift) - 1);
      std::memcpy(&a0, &low_bits, 4);
      std::memcpy(&a1, &high_bits, 4);
      const float lo = negative ? -a1 : a0;
      const float hi = negative ? -a0 : a1;
      const auto below = std::lower_bound(mid_begin, mid_end, lo) - mid_begin;
      const auto upto = std::upper_bound(mid_begin, mid_end, hi) - mid_begin;
      const uint32_t low15 = upto > below ? order_key(mid_[size_t(below)]) & 0x7fffu : 0x7fffu;
      packed_[negative * kPackedCount + j] = uint32_t(below) << kShift | low15;
    }
}

int Encoder8::encode_search(float r) const {
  int pos = 0;
  for (int step = 128; step > 0; step >>= 1) pos += (r > mid_[pos + step - 1]) ? step : 0;
  return pos;
}

void Encoder8::encode_scaled(const float* x, float scale, uint8_t* codes, size_t n) const {
  size_t i = 0;
#ifdef __AVX512F__
  if (!packed_.empty()) {
    const __m512 m = _mm512_set1_ps(scale);
    const __m512i sign = _mm512_set1_epi32(int(0x80000000u));
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    const __m512i ones = _mm512_set1_epi32(-1);
    const __m512i low = _mm512_set1_epi32(int(kPackedLow));
    const __m512i high = _mm512_set1_epi32(int(kPackedLow + kPackedCount - 1));
    const __m512i negative_half = _mm512_set1_epi32(int(kPackedCount));
    const __m512i low15 = _mm512_set1_epi32(0x7fff);
    const __m512i one = _mm512_set1_epi32(1);
    for (; i + 16 <= n; i += 16) {
      const __m512 r = _mm512_mul_ps(_mm512_loadu_ps(x + i), m);
      const __m512i u = _mm512_castps_si512(r);
      const __mmask16 negative = _mm512_cmplt_epi32_mask(u, _mm512_setzero_si512());
      __m512i bucket = _mm512_srli_epi32(_mm512_and_si512(u, magnitude), kShift);
      bucket = _mm512_sub_epi32(_mm512_min_epu32(_mm512_max_epu32(bucket, low), high), low);
      bucket = _mm512_mask_add_epi32(bucket, negative, bucket, negative_half);
      const __m512i entry = _mm512_i32gather_epi32(bucket, packed_.data(), 4);
      const __m512i key = _mm512_mask_xor_epi32(_mm512_or_si512(u, sign), negative, u, ones);
      const __mmask16 above = _mm512_cmpgt_epu32_mask(_mm512_and_si512(key, low15),
                                                      _mm512_and_si512(entry, low15));
      __m512i pos = _mm512_srli_epi32(entry, kShift);
      pos = _mm512_mask_add_epi32(pos, above, pos, one);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm512_cvtepi32_epi8(pos));
    }
  }
#endif
  for (; i < n; ++i) codes[i] = uint8_t(encode(x[i] * scale));
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
