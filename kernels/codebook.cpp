#include "kernels/codebook.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace lowbit::kernels {
namespace {

// NF4 (QLoRA paper, appendix E; bitsandbytes functional.py get_4bit_type).
constexpr std::array<float, 16> kNF4 = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// FP4 E2M1 as bitsandbytes lays it out: bit 3 is the sign, bits 2..0 index the
// magnitudes [0, 0.0625, 8, 12, 4, 6, 2, 3] / 12.
constexpr std::array<float, 8> kFP4Magnitude = {0.0f, 0.0625f / 12, 8.0f / 12, 12.0f / 12,
                                                4.0f / 12, 6.0f / 12, 2.0f / 12, 3.0f / 12};

Format4Table make_table(Format4 format, const char* name, const std::array<float, 16>& value) {
  Format4Table t{};
  t.format = format;
  t.name = name;
  t.value = value;
  std::array<uint8_t, 16> order{};
  for (int i = 0; i < 16; ++i) order[i] = uint8_t(i);
  // Stable so that FP4's +0 (code 0) sorts before -0 (code 8): +0 becomes the
  // code of 0.0 for rounding, as in bitsandbytes' encoder.
  std::stable_sort(order.begin(), order.end(),
                   [&](uint8_t a, uint8_t b) { return value[a] < value[b]; });
  // Drop the duplicate zero (FP4 has +0 and -0): 15 distinct values remain and
  // the 16th slot repeats the largest, so the midpoint table stays 15 long.
  std::vector<uint8_t> distinct;
  for (uint8_t c : order) {
    if (!distinct.empty() && value[distinct.back()] == value[c]) continue;
    distinct.push_back(c);
  }
  while (distinct.size() < 16) distinct.push_back(distinct.back());
  for (int i = 0; i < 16; ++i) t.sorted_code[i] = distinct[i];
  for (int i = 0; i < 15; ++i)
    t.midpoint[i] = (value[t.sorted_code[i]] + value[t.sorted_code[i + 1]]) * 0.5f;
  t.zero_code = uint8_t(zero_index(value.data(), 16));
  t.negative_zero_code = t.zero_code;
  for (int c = 0; c < 16; ++c)
    if (value[c] == 0.0f && std::signbit(value[c])) t.negative_zero_code = uint8_t(c);
  return t;
}

std::array<float, 16> fp4_values() {
  std::array<float, 16> v{};
  for (int c = 0; c < 8; ++c) {
    v[c] = kFP4Magnitude[c];
    v[c + 8] = -kFP4Magnitude[c];
  }
  return v;
}

}  // namespace

const char* format4_name(Format4 f) { return f == Format4::NF4 ? "nf4" : "fp4"; }

const Format4Table& format4_table(Format4 f) {
  static const Format4Table nf4 = make_table(Format4::NF4, "nf4", kNF4);
  static const Format4Table fp4 = make_table(Format4::FP4, "fp4", fp4_values());
  return f == Format4::NF4 ? nf4 : fp4;
}

std::array<float, 256> dynamic_map(bool is_signed) {
  std::vector<double> v;
  for (int i = 0; i < 7; ++i) {
    const int items = is_signed ? (1 << i) : (1 << (i + 1));
    const double scale = std::pow(10.0, i - 6);
    for (int k = 0; k < items; ++k) {
      const double x = scale * (0.1 + 0.9 * (k + 0.5) / items);
      v.push_back(x);
      if (is_signed) v.push_back(-x);
    }
  }
  v.push_back(0.0);
  v.push_back(1.0);
  std::sort(v.begin(), v.end());
  std::array<float, 256> out{};
  for (int i = 0; i < 256; ++i) out[i] = float(v[i]);
  return out;
}

int zero_index(const float* code, int size) {
  int best = 0;
  for (int i = 1; i < size; ++i)
    if (std::fabs(code[i]) < std::fabs(code[best])) best = i;
  return best;
}

bool codebook_is_valid(const float* code, int size) {
  for (int i = 0; i < size; ++i) {
    if (!std::isfinite(code[i]) || code[i] < -1.0f || code[i] > 1.0f) return false;
    if (i > 0 && !(code[i - 1] < code[i])) return false;
  }
  return true;
}

}  // namespace lowbit::kernels
