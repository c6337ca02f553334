// The CPU's 8-bit encoder, vectorised (Encoder8::encode_scaled of every
// instruction-set path this CPU runs: AVX-512 has its own) and scalar
// (encode), against its definition: the code
// is the number of midpoints strictly below the value, counted here by a plain
// loop. quantize_kernels_test checks whole blocks against a double-precision
// nearest-code reference. The vector path computes codes from a piecewise-linear
// description of the codebook; a dense sweep of floats checks it everywhere.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/codebook.h"
#include "kernels/cpu/encoder8.h"
#include "kernels/cpu/isa_kernels.h"

namespace lowbit {
namespace {

using kernels::CpuIsa;
using kernels::cpu::IsaKernels;

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
      for (CpuIsa isa : kernels::cpu_isas()) {
        std::vector<uint8_t> codes(x.size());
        kernels::cpu::isa_kernels(isa).encode_scaled_8bit(map.data(), scaled.data(), scale,
                                                          codes.data(), x.size());
        for (size_t i = 0; i < x.size(); ++i) {
          const float r = scaled[i] * scale;
          ASSERT_EQ(int(codes[i]), enc.encode(r))
              << kernels::cpu_isa_name(isa) << (is_signed ? " signed" : " unsigned")
              << " x=" << scaled[i] << " scale=" << scale;
          ASSERT_EQ(int(codes[i]), midpoints_below(map, r))
              << kernels::cpu_isa_name(isa) << (is_signed ? " signed" : " unsigned")
              << " x=" << scaled[i] << " scale=" << scale;
        }
      }
    }
  }
}

// Under an emulator (LOWBIT_EMULATED, set by the cross build's CTest) the
// sweeps take every (8 stride - 1)th float pattern instead of every stride-th:
// qemu runs them 10-20x slower. The neighbourhoods of the midpoints and of the
// pieces' ends, where an error would sit, are swept whole either way.
uint32_t sweep_stride(uint32_t stride) {
  return std::getenv("LOWBIT_EMULATED") != nullptr ? 8 * stride - 1 : stride;
}

// A path's encode_scaled (scale 1) against the definition (midpoints strictly below,
// counted by a binary search over the test's own midpoints) for every float of
// magnitude <= 1 whose bit pattern is a multiple of `stride`, both signs, plus
// the float neighbourhoods of every midpoint and power of ten (where the
// vector path's pieces meet); returns the number of differences.
size_t sweep_differences(const IsaKernels& path, const float* map, uint32_t stride) {
  stride = sweep_stride(stride);
  std::vector<float> x;
  for (uint32_t bits = 0; bits <= 0x3f800000u; bits += stride) {
    float f;
    std::memcpy(&f, &bits, 4);
    x.insert(x.end(), {f, -f});
  }
  std::vector<float> mids(255);
  for (int i = 0; i < 255; ++i) mids[size_t(i)] = kernels::code_midpoint(map, i);
  std::vector<float> centres;
  for (float mid : mids) centres.push_back(std::fabs(mid));
  for (int e = 0; e <= 8; ++e) centres.push_back(std::pow(10.0f, float(-e)));
  for (float c : centres) {
    float f = c;
    for (int k = 0; k < 300; ++k) f = std::nextafter(f, 0.0f);
    for (int k = 0; k < 600 && f <= 1.0f; ++k, f = std::nextafter(f, 2.0f)) x.insert(x.end(), {f, -f});
  }
  std::vector<uint8_t> codes(x.size());
  path.encode_scaled_8bit(map, x.data(), 1.0f, codes.data(), x.size());
  size_t differences = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const auto below = std::lower_bound(mids.begin(), mids.end(), x[i]) - mids.begin();
    differences += codes[i] != below ? 1 : 0;
  }
  return differences;
}

TEST(Encoder8, VectorPathEqualsTheDefinitionOnADenseSweep) {
  for (bool is_signed : {true, false}) {
    const auto map = kernels::dynamic_map(is_signed);
    const kernels::cpu::Encoder8 enc(map.data());
    EXPECT_TRUE(enc.piecewise()) << (is_signed ? "signed" : "unsigned");
    EXPECT_TRUE(enc.windowed()) << (is_signed ? "signed" : "unsigned");
    for (CpuIsa isa : kernels::cpu_isas())
      EXPECT_EQ(sweep_differences(kernels::cpu::isa_kernels(isa), map.data(), 61), 0u)
          << kernels::cpu_isa_name(isa) << (is_signed ? " signed" : " unsigned");
  }
}

// A codebook computed with other roundings (bitsandbytes builds its maps in
// float32, this project in double) must keep the vector path and stay exact:
// every entry of the signed map moved by up to 2 ulps, mirrored.
TEST(Encoder8, VectorPathToleratesOtherRoundingsOfTheMap) {
  auto map = kernels::dynamic_map(true);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> ulps(-2, 2);
  for (int j = 1; j <= 127; ++j) {
    float v = map[size_t(127 + j)];
    for (int k = ulps(rng); k != 0; k += k > 0 ? -1 : 1) v = std::nextafter(v, k > 0 ? 2.0f : 0.0f);
    map[size_t(127 + j)] = v;
    map[size_t(127 - j)] = -v;
  }
  const kernels::cpu::Encoder8 enc(map.data());
  EXPECT_TRUE(enc.piecewise());
  EXPECT_TRUE(enc.windowed());
  for (CpuIsa isa : kernels::cpu_isas())
    EXPECT_EQ(sweep_differences(kernels::cpu::isa_kernels(isa), map.data(), 127), 0u)
        << kernels::cpu_isa_name(isa);
}

// Codebooks without the structure fall back to the scalar search, still exact;
// a linear map has it.
TEST(Encoder8, OtherCodebooksAreEncodedExactly) {
  std::array<float, 256> linear{};
  for (int i = 0; i < 256; ++i) linear[size_t(i)] = float(i - 127) / 128.0f;
  const kernels::cpu::Encoder8 linear_enc(linear.data());
  EXPECT_TRUE(linear_enc.piecewise());
  EXPECT_TRUE(linear_enc.windowed());
  for (CpuIsa isa : kernels::cpu_isas())
    EXPECT_EQ(sweep_differences(kernels::cpu::isa_kernels(isa), linear.data(), 127), 0u)
        << kernels::cpu_isa_name(isa);

  std::array<float, 256> quantiles{};  // irregular spacing: no pieces
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& q : quantiles) q = u(rng);
  std::sort(quantiles.begin(), quantiles.end());
  const kernels::cpu::Encoder8 quantile_enc(quantiles.data());
  EXPECT_FALSE(quantile_enc.piecewise());
  for (CpuIsa isa : kernels::cpu_isas())
    EXPECT_EQ(sweep_differences(kernels::cpu::isa_kernels(isa), quantiles.data(), 127), 0u)
        << kernels::cpu_isa_name(isa);
}

}  // namespace
}  // namespace lowbit
