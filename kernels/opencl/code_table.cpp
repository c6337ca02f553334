#include "kernels/opencl/code_table.h"

#include <algorithm>
#include <limits>

#include "kernels/codebook.h"
#include "kernels/dtype.h"
#include "kernels/error.h"

namespace lowbit::kernels::opencl {
namespace {

// Midpoints strictly below r, of `count` ascending ones.
int count_below(const float* mid, int count, float r) {
  int below = 0;
  while (below < count && r > mid[below]) ++below;
  return below;
}

// Stores byte i of the bytes packed four to a word from word `at` of `table` (byte k of a word in
// its bits 8k to 8k + 7: what the kernels' lb_word_byte and lb_local_byte read back).
void put_byte(std::vector<uint32_t>& table, size_t at, int i, uint32_t value) {
  table[at + size_t(i / 4)] |= value << (8 * (i % 4));
}

// Per sign and bucket of |r| (bucket 0 below 2^(first_exponent - 127), then exponent and
// `mantissa_bits` mantissa bits; the last from its start to inf), the number of the `count`
// ascending midpoints below the bucket's lowest r, as bytes from word `at` of `table`, four to
// a word. Returns the most midpoints one bucket spans.
int fill_bucket_starts(const float* mid, int count, int mantissa_bits, int first_exponent,
                       int buckets, std::vector<uint32_t>& table, size_t at) {
  int steps = 0;
  const int shift = 23 - mantissa_bits;
  for (int sign = 0; sign < 2; ++sign) {
    for (int idx = 0; idx < buckets; ++idx) {
      // Magnitude bits of the bucket's smallest and largest members.
      uint32_t lo = 0, hi = (uint32_t(first_exponent) << 23) - 1;
      if (idx > 0) {
        lo = uint32_t(idx - 1 + (first_exponent << mantissa_bits)) << shift;
        hi = lo + (1u << shift) - 1;
      }
      if (idx == buckets - 1) hi = 0x7f800000u;
      const uint32_t s = sign ? 0x80000000u : 0u;
      // The lowest r of a negative bucket is its largest magnitude.
      const float low = bits_float((sign ? hi : lo) | s), high = bits_float((sign ? lo : hi) | s);
      const int first = count_below(mid, count, low), last = count_below(mid, count, high);
      put_byte(table, at, sign * buckets + idx, uint32_t(first));
      steps = std::max(steps, last - first);
    }
  }
  return steps;
}

}  // namespace

std::vector<uint32_t> build_code_table(const float* code) {
  std::vector<uint32_t> table(size_t(kCodeTableWords), 0);
  float mid[256];
  for (int i = 0; i < 255; ++i) mid[i] = code_midpoint(code, i);
  mid[255] = std::numeric_limits<float>::infinity();
  for (int i = 0; i < 256; ++i) {
    table[size_t(i)] = float_bits(code[i]);
    table[size_t(256 + i)] = float_bits(mid[i]);
  }
  table[512] = uint32_t(fill_bucket_starts(mid, 255, kCodeMantissaBits, kCodeFirstExponent,
                                           kCodeBuckets, table, 514));
  table[513] = uint32_t(zero_index(code, 256));
  return table;
}

std::vector<uint32_t> build_table4(const Format4Table& format) {
  std::vector<uint32_t> table(size_t(kTable4Words), 0);
  for (int i = 0; i < 15; ++i) table[size_t(i)] = float_bits(format.midpoint[size_t(i)]);
  table[15] = float_bits(std::numeric_limits<float>::infinity());
  const int steps = fill_bucket_starts(format.midpoint.data(), 15, kTable4MantissaBits,
                                       kTable4FirstExponent, kTable4Buckets, table, 16);
  LOWBIT_CHECK(steps <= 1, "build_table4: a bucket of |r| spans ", steps, " midpoints of ",
               format.name, "; the OpenCL quantizer assumes at most one");
  for (int negative = 0; negative < 2; ++negative)
    for (int k = 0; k < 16; ++k) {
      uint32_t c = format.sorted_code[size_t(k)];
      if (negative && c == format.zero_code) c = format.negative_zero_code;
      put_byte(table, kTable4Codes, 16 * negative + k, c);
    }
  return table;
}

}  // namespace lowbit::kernels::opencl
