// The table optimizer.cl encodes 8-bit states with, made from a 256-entry
// codebook: the nearest code found from |r|'s exponent and top mantissa bits
// plus (for both dynamic maps) one comparison, instead of an 8-step binary
// search. The backend builds it on the device (step.cl, build_code_table);
// build_code_table below is its definition, which the tests hold the device's
// words to. Internal to kernels/opencl.
#pragma once

#include <cstdint>
#include <vector>

namespace lowbit::kernels {
struct Format4Table;
}

namespace lowbit::kernels::opencl {

// Layout in 32-bit words, mirrored by the LB_TABLE_* macros of optimizer.cl:
//   [0, 256)    the codebook (float bits)
//   [256, 512)  its 255 midpoints (code_midpoint), then +inf
//   512         steps: the most midpoints one bucket spans
//   513         zero: the entry of smallest magnitude (all-zero blocks)
//   from 514    start[2][kCodeBuckets], four 8-bit counts per word (entry e
//               in bits 8 * (e % 4) of word 514 + e / 4, so that the kernel
//               reads them with 32-bit loads): per sign and bucket of |r|,
//               the number of midpoints below the bucket's lowest value.
// Bucket of |r|: 0 below 2^-31, then exponent and kCodeMantissaBits mantissa
// bits (32 binades), clamped to the last bucket from 2 up.
constexpr int kCodeMantissaBits = 7;
constexpr int kCodeFirstExponent = 96;
constexpr int kCodeBuckets = 1 + 32 * (1 << kCodeMantissaBits);
constexpr int kCodeTableWords = 514 + (2 * kCodeBuckets + 3) / 4;

// The table of `code` (256 ascending floats). Where steps is 1 (both dynamic
// maps) the kernel's code of r is start + (r > the next midpoint), which equals
// the number of all midpoints below r (the CPU encoder's rule): the count only
// grows with r, and start and start + steps bound it over a bucket. Other
// codebooks are searched.
std::vector<uint32_t> build_code_table(const float* code);

// The 4-bit quantizer's table of a format (NF4, FP4), in 32-bit words,
// mirrored by the LB_T4_* macros of quantize.cl:
//   [0, 16)     the 15 midpoints of the format's sorted values (float bits), then +inf
//   from 16     start[2][kTable4Buckets], four 8-bit counts per word as above: per sign and
//               bucket of |r|, the number of midpoints below the bucket's lowest value
//   from kTable4Codes  code[2][16], bytes four to a word: the code of the k-th smallest value,
//               for r >= 0 and for r < 0 (the same but for the zero, which a negative r
//               takes as the format's negative zero)
// Bucket of |r|: 0 below 2^-24, then exponent and 3 mantissa bits (25 binades), clamped to the
// last bucket from 2 up. Every bucket of both formats holds at most one midpoint (checked when
// built), so the nibble's position is start + (r > midpoint[start]).
constexpr int kTable4MantissaBits = 3;
constexpr int kTable4FirstExponent = 103;
constexpr int kTable4Buckets = 1 + 25 * (1 << kTable4MantissaBits);
constexpr int kTable4Codes = 16 + (2 * kTable4Buckets + 3) / 4;
constexpr int kTable4Words = kTable4Codes + 2 * 16 / 4;

// The table of a 4-bit format.
std::vector<uint32_t> build_table4(const Format4Table& format);

}  // namespace lowbit::kernels::opencl
