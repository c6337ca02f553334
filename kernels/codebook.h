// Code tables shared by every backend: the 8-bit dynamic maps (bitsandbytes'
// create_dynamic_map) and the 4-bit NF4 / FP4 tables, plus the midpoints that
// define nearest-code rounding. Torch-free; quant/ wraps these as tensors.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace lowbit::kernels {

// 4-bit formats. Values are stable: they are written into files.
enum class Format4 : uint8_t { NF4 = 0, FP4 = 1 };

const char* format4_name(Format4 f);

// A 4-bit format: `value[c]` is what code c (0..15) decodes to (in [-1, 1]);
// `sorted_code` lists the codes in ascending value order and `midpoint[k]` lies
// between the k-th and (k+1)-th smallest values. Encoding picks the sorted
// position = number of midpoints strictly below x, so a value exactly on a
// midpoint takes the lower code (bitsandbytes' `x > threshold` rule).
struct Format4Table {
  Format4 format;
  const char* name;
  std::array<float, 16> value;
  std::array<uint8_t, 16> sorted_code;
  std::array<float, 15> midpoint;
  uint8_t zero_code;  // code of +0.0: padding nibble and all-zero blocks
  // Code for a negative value that rounds to zero. FP4 has a -0 (code 8) and,
  // like bitsandbytes' encoder, keeps the sign there; NF4 has one zero.
  uint8_t negative_zero_code;
};

const Format4Table& format4_table(Format4 f);

// bitsandbytes create_dynamic_map(signed, max_exponent_bits=7, total_bits=8):
// for i = 0..6 there are K = 2^i (signed) or 2^(i+1) (unsigned) values
// 10^(i-6) * (0.1 + 0.9 * (k + 1/2) / K), k = 0..K-1 (negated copies too when
// signed), then 0 and 1.0; sorted ascending. Computed in double, rounded to
// float once. 256 entries: signed has 127 negatives (no -1), 0 at index 127.
std::array<float, 256> dynamic_map(bool is_signed);

// Midpoints of a sorted 256-entry codebook, computed exactly as the kernels do:
// (code[i] + code[i+1]) * 0.5f in float arithmetic.
inline float code_midpoint(const float* code, int i) { return (code[i] + code[i + 1]) * 0.5f; }

// Index of the entry with the smallest magnitude (the first one on a tie):
// every element of an all-zero block (absmax 0) gets this code.
int zero_index(const float* code, int size);

// True if the entries are finite, strictly ascending and within [-1, 1].
bool codebook_is_valid(const float* code, int size);

}  // namespace lowbit::kernels
