// Fast exact nearest-code search for a sorted 256-entry codebook on the CPU.
// Floats are bucketed by their top 17 bits in IEEE total order (sign, exponent,
// 8 mantissa bits: 0.4% relative width); a table gives, per bucket, how many
// midpoints lie below it. When no bucket holds two midpoints (true for both
// dynamic maps) the position is table[bucket] + (r > next midpoint): two loads
// and a compare instead of an 8-step binary search. Results are identical to
// counting the midpoints strictly below r.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lowbit::kernels::cpu {

class Encoder8 {
 public:
  explicit Encoder8(const float* code);

  // The encoder of `code`, built once per distinct codebook and cached.
  static const Encoder8& for_code(const float* code);

  // Number of midpoints strictly below r (= nearest position, ties low).
  int encode(float r) const {
    if (!fast_) return encode_search(r);
    const int pos = start_[bucket(r)];
    return pos + (r > mid_[pos] ? 1 : 0);
  }

  // codes[i] = encode(x[i] / absmax) for i < n (absmax > 0, finite): the same
  // results, 16 values per step with AVX-512 where the build enables it.
  void encode_scaled(const float* x, float absmax, uint8_t* codes, size_t n) const;

  const float* midpoints() const { return mid_.data(); }

 private:
  static constexpr int kShift = 15;  // 32 - 17 bucket bits
  static constexpr size_t kBuckets = size_t(1) << (32 - kShift);
  static uint32_t order_key(float r) {
    uint32_t u;
    std::memcpy(&u, &r, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  }
  static uint32_t bucket(float r) { return order_key(r) >> kShift; }
  int encode_search(float r) const;

  std::array<float, 256> code_;
  std::array<float, 256> mid_;  // 255 midpoints and +inf, so mid_[255] never passes
  // Per bucket: midpoints below its smallest float; 3 bytes of padding so that
  // a vector gather may read each entry as the low byte of a 32-bit word.
  std::vector<uint8_t> start_;
  bool fast_;
};

}  // namespace lowbit::kernels::cpu
