#include "kernels/cpu/encoder8.h"

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
}

int Encoder8::encode_search(float r) const {
  int pos = 0;
  for (int step = 128; step > 0; step >>= 1) pos += (r > mid_[pos + step - 1]) ? step : 0;
  return pos;
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
