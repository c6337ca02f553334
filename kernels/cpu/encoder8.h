// Fast exact nearest-code search for a sorted 256-entry codebook on the CPU.
// Floats are bucketed by their top 17 bits in IEEE total order (sign, exponent,
// 8 mantissa bits: 0.4% relative width); a table gives, per bucket, how many
// midpoints lie below it. When no bucket holds two midpoints (true for both
// dynamic maps) the position is table[bucket] + (r > next midpoint): two loads
// and a compare instead of an 8-step binary search. Results are identical to
// counting the midpoints strictly below r. The vector path (AVX-512) packs
// both loads into one: see packed_.
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

  // codes[i] = encode(x[i] * scale) for i < n (|x[i] * scale| <= 1, finite):
  // the same results, 16 values per step with AVX-512 where the build enables it.
  void encode_scaled(const float* x, float scale, uint8_t* codes, size_t n) const;

  const float* midpoints() const { return mid_.data(); }

 private:
  static constexpr int kShift = 15;  // 32 - 17 bucket bits
  // Vector buckets: |r| in [2^-24, 1], i.e. (|r| bits >> kShift) in
  // [kPackedLow, kPackedLow + kPackedCount).
  static constexpr uint32_t kPackedLow = (127u - 24u) << 8;
  static constexpr uint32_t kPackedCount = (127u << 8) - kPackedLow + 1;
  static uint32_t order_key(float r) {
    uint32_t u;
    std::memcpy(&u, &r, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  }
  static uint32_t bucket(float r) { return order_key(r) >> kShift; }
  int encode_search(float r) const;

  std::array<float, 256> code_;
  std::array<float, 256> mid_;  // 255 midpoints and +inf, so mid_[255] never passes
  std::vector<uint8_t> start_;  // per bucket: midpoints below its smallest float
  bool fast_;
  // Per sign and bucket of |r| in the range above: start << 15 | the low 15
  // key bits of the bucket's midpoint (0x7fff when it holds none); comparing
  // low key bits decides r > midpoint since both share the bucket's high bits.
  // One gather per 16 values. Built only when every midpoint has magnitude
  // >= 2^-23 (true for the dynamic maps): then any |r| < 2^-24, clamped into
  // the first bucket of its sign, still gets the exact answer. Empty otherwise.
  std::vector<uint32_t> packed_;
};

}  // namespace lowbit::kernels::cpu
