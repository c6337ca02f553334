// The CPU's 8-bit encoder, vectorised (Encoder8::encode_scaled, AVX-512 where
// the build enables it) and scalar (encode), against its definition: the code
// is the number of midpoints strictly below the value, counted here by a plain
// loop. quantize_kernels_test checks whole blocks against a double-precision
// nearest-code reference.
#include <array>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/codebook.h"
#include "kernels/cpu/encoder8.h"

namespace lowbit {
namespace {

// Midpoints of `map` strictly below r.
int midpoints_below(const std::array<float, 256>& map, float r) {
  int below = 0;
  for (int k = 0; k < 255; ++k) below += kernels::code_midpoint(map.data(), k) < r ? 1 : 0;
  return below;
}

TEST(Encoder8, ScaledBlockEncodingEqualsScalarEncoding) {
  for (bool is_signed : {true, false}) {
    const auto map = kernels::dynamic_map(is_signed);
    const kernels::cpu::Encoder8& enc = kernels::cpu::Encoder8::for_code(map.data());
    // Values: every code, every midpoint and its float neighbours, zeros, and
    // log-uniform magnitudes over the map's range (1e-8 .. 1).
    std::vector<float> x;
    for (int i = 0; i < 256; ++i) x.push_back(map[size_t(i)]);
    for (int i = 0; i < 255; ++i) {
      const float mid = kernels::code_midpoint(map.data(), i);
      x.insert(x.end(), {mid, std::nextafter(mid, 2.0f), std::nextafter(mid, -2.0f)});
    }
    x.insert(x.end(), {0.0f, -0.0f, 1.0f, -1.0f, 1e-30f, -1e-30f});
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> exponent(-8.0f, 0.0f);
    for (int i = 0; i < 20000; ++i) {
      const float m = std::pow(10.0f, exponent(rng));
      x.push_back(is_signed && (i & 1) ? -m : m);
    }
    x.push_back(0.5f);  // an odd count: a scalar tail after the vector loop
    for (float absmax : {1.0f, 0.37f, 3.0e-3f}) {
      std::vector<float> scaled(x.size());
      for (size_t i = 0; i < x.size(); ++i) scaled[i] = x[i] * absmax;
      const float scale = 1.0f / absmax;
      std::vector<uint8_t> codes(x.size());
      enc.encode_scaled(scaled.data(), scale, codes.data(), x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        const float r = scaled[i] * scale;
        ASSERT_EQ(int(codes[i]), enc.encode(r))
            << (is_signed ? "signed" : "unsigned") << " x=" << scaled[i] << " scale=" << scale;
        ASSERT_EQ(int(codes[i]), midpoints_below(map, r))
            << (is_signed ? "signed" : "unsigned") << " x=" << scaled[i] << " scale=" << scale;
      }
    }
  }
}

}  // namespace
}  // namespace lowbit
