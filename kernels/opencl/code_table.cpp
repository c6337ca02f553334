#include "kernels/opencl/code_table.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/codebook.h"

namespace lowbit::kernels::opencl {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Midpoints strictly below r.
int count_below(const float* mid, float r) {
  int count = 0;
  while (count < 255 && r > mid[count]) ++count;
  return count;
}

}  // namespace

std::vector<uint32_t> build_code_table(const float* code) {
  std::vector<uint32_t> table(size_t(kCodeTableWords), 0);
  float mid[256];
  for (int i = 0; i < 255; ++i) mid[i] = code_midpoint(code, i);
  mid[255] = std::numeric_limits<float>::infinity();
  for (int i = 0; i < 256; ++i) {
    table[size_t(i)] = bits_of(code[i]);
    table[size_t(256 + i)] = bits_of(mid[i]);
  }
  int steps = 0;
  constexpr int kShift = 23 - kCodeMantissaBits;
  for (int sign = 0; sign < 2; ++sign) {
    for (int idx = 0; idx < kCodeBuckets; ++idx) {
      // Magnitude bits of the bucket's smallest and largest members.
      uint32_t lo = 0, hi = (uint32_t(kCodeFirstExponent) << 23) - 1;
      if (idx > 0) {
        lo = uint32_t(idx - 1 + (kCodeFirstExponent << kCodeMantissaBits)) << kShift;
        hi = lo + (1u << kShift) - 1;
      }
      if (idx == kCodeBuckets - 1) hi = 0x7f800000u;
      const uint32_t s = sign ? 0x80000000u : 0u;
      // The lowest r of a negative bucket is its largest magnitude.
      const float low = float_of((sign ? hi : lo) | s), high = float_of((sign ? lo : hi) | s);
      const int first = count_below(mid, low), last = count_below(mid, high);
      const int e = sign * kCodeBuckets + idx;
      table[size_t(514 + e / 4)] |= uint32_t(first) << (8 * (e % 4));
      steps = std::max(steps, last - first);
    }
  }
  table[512] = uint32_t(steps);
  table[513] = uint32_t(zero_index(code, 256));
  return table;
}

}  // namespace lowbit::kernels::opencl
