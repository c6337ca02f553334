// Fast exact nearest-code search for a sorted 256-entry codebook on the CPU.
// Scalar: floats are bucketed by their top 17 bits in IEEE total order (sign,
// exponent, 8 mantissa bits: 0.4% relative width); a table gives, per bucket,
// how many midpoints lie below it. When no bucket holds two midpoints (true
// for both dynamic maps) the position is table[bucket] + (r > next midpoint):
// two loads and a compare instead of an 8-step binary search. Vector paths
// (AVX-512, AVX2, NEON): the code as a piecewise-linear function of |r|, no
// table loads per value (see Pieces; AVX2 reads them through eight windows,
// Avx2Pieces in encoder8.cpp). Results
// are identical to counting the midpoints strictly below r.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "kernels/cpu/isa_region.h"
#include "kernels/dtype.h"

LOWBIT_CPU_ISA_BEGIN

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
  // the same results, 4 to 16 values per step on the vector paths.
  void encode_scaled(const float* x, float scale, uint8_t* codes, size_t n) const;

  const float* midpoints() const { return mid_.data(); }

  // The vector path's description of the codebook (built by make_pieces in
  // encoder8.cpp, absent when the codebook does not fit it). For a codebook
  // with an exact 0.0 entry whose negative entries mirror positive ones (both
  // dynamic maps), the code of r is zero +/- m(|r|), clamped at 0, where the
  // magnitude code m(y) = floor(y * slope + offset) in the piece holding y.
  // At most 16 pieces cover [0, 2): linear ones over runs of equally spaced
  // midpoints, constant ones elsewhere. The piece of y is the first piece of
  // its span (two binades) plus the thresholds inside the span it exceeds
  // (two at most). Where the fraction of y * slope + offset is below kWindow the
  // scalar search decides; everywhere else the formula is proven exact at
  // construction against every midpoint.
  struct Pieces {
    int zero = 0;
    std::array<int32_t, 16> first{};  // per span: its first piece
    std::array<int32_t, 16> threshold1{}, threshold2{};  // float bits; INT32_MAX: none
    std::array<float, 16> slope{}, offset{};
    // The AVX2 path's view: the spans joined into at most 8 windows of
    // consecutive spans with at most two thresholds each (absent when they
    // do not fit). Per window: its thresholds, and the slope and offset of
    // its first piece and of the two after it, which it picks among.
    struct Windows {
      alignas(32) std::array<uint8_t, 32> of_span{};  // window of span b at b and 16 + b
      std::array<int32_t, 8> threshold1{}, threshold2{};
      std::array<std::array<float, 8>, 3> slope{}, offset{};
    };
    std::optional<Windows> windows;
  };

  // True if encode_scaled has its table-free vector form for this codebook
  // (the AVX-512 and NEON paths use it; AVX2 where it also has windows).
  bool piecewise() const { return pieces_.has_value(); }
  bool windowed() const { return pieces_ && pieces_->windows; }

 private:
  static constexpr int kShift = 15;  // 32 - 17 bucket bits
  static uint32_t order_key(float r) {
    const uint32_t u = float_bits(r);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  }
  static uint32_t bucket(float r) { return order_key(r) >> kShift; }
  int encode_search(float r) const;

  std::array<float, 256> code_;
  std::array<float, 256> mid_;  // 255 midpoints and +inf, so mid_[255] never passes
  std::vector<uint8_t> start_;  // per bucket: midpoints below its smallest float
  bool fast_;
  std::optional<Pieces> make_pieces() const;
  // encode_scaled's vector loop over whole groups of lanes; returns how many.
  template <bool kNegatives>
  size_t encode_pieces(const float* x, float scale, uint8_t* codes, size_t n) const;
  // codes[l] = encode(x[l] * scale) for the lanes l set in `lanes`.
  void encode_lanes(unsigned lanes, const float* x, float scale, uint8_t* codes) const {
    for (; lanes != 0; lanes &= lanes - 1) {
      const unsigned l = unsigned(__builtin_ctz(lanes));
      codes[l] = uint8_t(encode(x[l] * scale));
    }
  }
  std::optional<Pieces> pieces_;
};

// Encoder8::for_code(code).encode_scaled(x, scale, codes, n): the entry point
// tests reach every path's encoder through (kernels/cpu/isa_kernels.h).
void encode_scaled_8bit(const float* code, const float* x, float scale, uint8_t* codes, size_t n);

LOWBIT_CPU_ISA_END
