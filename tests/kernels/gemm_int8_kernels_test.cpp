// The int8 matmul (LLM.int8()): every integer core of the CPU (scalar,
// AVX2, AVX-512 VNNI, as built) against sums computed here in int64, exactly
// (integer arithmetic has no rounding to tolerate); shapes cover tile tails
// and inputs that are not a multiple of 4, 16 or 64. The row quantizer and
// Backend::gemm_int8 are checked against the contract's float operations
// written out here, bit for bit, on every backend that implements the op.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/backend.h"
#include "kernels/cpu/isa_kernels.h"
#include "tests/kernels/backends.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using kernels::cpu::int8_core_name;
using kernels::cpu::Int8Core;
using kernels::cpu::IsaKernels;
using kernels::cpu::WeightInt8View;
using testing::download;
using testing::expect_error;
using testing::upload;

// One integer core as an instruction-set path built it.
struct PathCore {
  const IsaKernels* path;
  Int8Core core;
  std::string name() const {
    return std::string(kernels::cpu_isa_name(path->isa)) + "/" + int8_core_name(core);
  }
};

// Every core of every path this CPU runs.
std::vector<PathCore> path_cores() {
  std::vector<PathCore> out;
  for (kernels::CpuIsa isa : kernels::cpu_isas()) {
    const IsaKernels& path = kernels::cpu::isa_kernels(isa);
    for (Int8Core core : path.int8_cores()) out.push_back({&path, core});
  }
  return out;
}

std::vector<int8_t> random_codes(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> code(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& c : v) c = int8_t(code(rng));
  return v;
}

std::vector<int32_t> row_sums(const std::vector<int8_t>& w, size_t out, size_t in) {
  std::vector<int32_t> s(out, 0);
  for (size_t o = 0; o < out; ++o)
    for (size_t i = 0; i < in; ++i) s[o] += w[o * in + i];
  return s;
}

// sum_k x[r, k] w[o, k] in int64.
std::vector<int64_t> reference_sums(const std::vector<int8_t>& x, const std::vector<int8_t>& w,
                                    size_t m, size_t out, size_t in) {
  std::vector<int64_t> acc(m * out, 0);
  for (size_t r = 0; r < m; ++r)
    for (size_t o = 0; o < out; ++o)
      for (size_t i = 0; i < in; ++i) acc[r * out + o] += int64_t(x[r * in + i]) * w[o * in + i];
  return acc;
}

struct Shape {
  size_t m, out, in;
};

// Tile tails (m % 4, out % 4 and below one 64-row block), k below and
// around the AVX2 (16) and VNNI (64) steps, and one large row.
const std::vector<Shape> kShapes = {
    {1, 1, 1},     {1, 5, 3},      {2, 7, 4},      {3, 9, 15},    {4, 4, 16},
    {5, 13, 17},   {7, 66, 63},    {1, 130, 64},   {6, 65, 65},   {9, 3, 127},
    {17, 70, 130}, {1, 257, 1000}, {33, 129, 257}, {2, 40, 4096},
};

TEST(GemmInt8Kernels, EveryCoreGivesTheExactIntegerSums) {
  std::mt19937 rng(11);
  for (const Shape& s : kShapes) {
    const auto x = random_codes(s.m * s.in, rng);
    const auto w = random_codes(s.out * s.in, rng);
    const auto sums = row_sums(w, s.out, s.in);
    const WeightInt8View view{w.data(), nullptr, sums.data(), s.out, s.in};
    const auto expected = reference_sums(x, w, s.m, s.out, s.in);
    for (const PathCore& c : path_cores()) {
      std::vector<int32_t> acc(s.m * s.out, -1);
      c.path->gemm_int8_s32(c.core, x.data(), s.m, view, acc.data());
      size_t wrong = 0;
      for (size_t i = 0; i < acc.size(); ++i) wrong += int64_t(acc[i]) != expected[i];
      EXPECT_EQ(wrong, 0u) << c.name() << " m" << s.m << " W[" << s.out << "x" << s.in
                           << "]";
    }
  }
}

// The largest products: the VNNI core's +128 shift makes its unsigned lanes
// reach 255 x 127, and its running sums wrap; the row-sum correction must
// still land on the exact value, here -127^2 k and +127^2 k.
TEST(GemmInt8Kernels, ExtremeCodesStayExact) {
  const size_t in = 8191, out = 6, m = 3;
  std::vector<int8_t> x(m * in), w(out * in);
  for (size_t i = 0; i < x.size(); ++i) x[i] = (i / in) % 2 ? 127 : -127;
  for (size_t i = 0; i < w.size(); ++i) w[i] = (i / in) % 2 ? -127 : 127;
  const auto sums = row_sums(w, out, in);
  const WeightInt8View view{w.data(), nullptr, sums.data(), out, in};
  const auto expected = reference_sums(x, w, m, out, in);
  for (const PathCore& c : path_cores()) {
    std::vector<int32_t> acc(m * out);
    c.path->gemm_int8_s32(c.core, x.data(), m, view, acc.data());
    for (size_t i = 0; i < acc.size(); ++i)
      ASSERT_EQ(int64_t(acc[i]), expected[i]) << c.name() << " output " << i;
  }
}

// The contract's row quantization in float: c = nearbyint(x * (127 / a)).
void expected_row_codes(const float* x, size_t k, std::vector<int8_t>& codes, float& absmax) {
  float a = 0.0f;
  bool finite = true;
  for (size_t j = 0; j < k; ++j) {
    a = std::max(a, std::fabs(x[j]));
    finite = finite && std::isfinite(x[j]);
  }
  codes.assign(k, 0);
  if (!finite) {
    absmax = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  absmax = a;
  const float inv = a > 0.0f ? 127.0f / a : 0.0f;
  for (size_t j = 0; j < k; ++j) codes[j] = int8_t(std::nearbyint(x[j] * inv));
}

TEST(GemmInt8Kernels, RowQuantizationFollowsTheContract) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const size_t k = 77, m = 6;
  std::vector<float> x(m * k);
  for (auto& v : x) v = normal(rng);
  std::fill(x.begin() + 2 * k, x.begin() + 3 * k, 0.0f);  // a zero row
  x[3 * k + 5] = std::numeric_limits<float>::infinity();
  x[4 * k + 70] = std::numeric_limits<float>::quiet_NaN();
  // Exact halves: with absmax 127 the scale is 1, so 0.5 and 2.5 round to even.
  for (size_t j = 0; j < k; ++j) x[5 * k + j] = float(j % 7) - 2.5f;
  x[5 * k] = 127.0f;
  std::vector<int8_t> codes(m * k, 99);
  std::vector<float> absmax(m);
  kernels::cpu::quantize_rows_int8(x.data(), m, k, codes.data(), absmax.data());
  for (size_t r = 0; r < m; ++r) {
    std::vector<int8_t> want;
    float a = 0.0f;
    expected_row_codes(&x[r * k], k, want, a);
    if (std::isnan(a)) {
      EXPECT_TRUE(std::isnan(absmax[r])) << "row " << r;
    } else {
      EXPECT_EQ(absmax[r], a) << "row " << r;
    }
    EXPECT_EQ(std::vector<int8_t>(codes.begin() + r * k, codes.begin() + (r + 1) * k), want)
        << "row " << r;
  }
  EXPECT_EQ(codes[5 * k + 3], 0);  // 0.5 -> 0
  EXPECT_EQ(codes[5 * k + 5], 2);  // 2.5 -> 2
  EXPECT_EQ(codes[5 * k + 6], 4);  // 3.5 -> 4
}

// y as the contract defines it, in float, in the contract's order.
std::vector<float> expected_y(const std::vector<float>& x, size_t m, const std::vector<int8_t>& w,
                              const std::vector<float>& scale, const std::vector<float>* bias,
                              size_t out, size_t in) {
  std::vector<int8_t> xc(m * in), row;
  std::vector<float> absmax(m);
  for (size_t r = 0; r < m; ++r) {
    expected_row_codes(&x[r * in], in, row, absmax[r]);
    std::copy(row.begin(), row.end(), xc.begin() + r * in);
  }
  const auto acc = reference_sums(xc, w, m, out, in);
  std::vector<float> y(m * out);
  for (size_t r = 0; r < m; ++r)
    for (size_t o = 0; o < out; ++o) {
      const float factor = absmax[r] * kernels::kInt8Dequant;
      float v = float(int32_t(acc[r * out + o])) * factor * scale[o];
      if (bias) v += (*bias)[o];
      y[r * out + o] = v;
    }
  return y;
}

bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof(float)) == 0;
}

TEST(GemmInt8Kernels, BackendsFollowTheContractBitForBit) {
  std::shared_ptr<kernels::Backend> holder;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> positive(0.01f, 3.0f);
  for (const Shape& s : kShapes) {
    std::vector<float> x(s.m * s.in), scale(s.out), bias(s.out);
    for (auto& v : x) v = normal(rng) * 4.0f;
    if (s.m > 2) x[s.in + s.in / 2] = std::numeric_limits<float>::quiet_NaN();  // row 1: NaN
    if (s.m > 3) x[2 * s.in] = std::numeric_limits<float>::infinity();         // row 2: inf
    if (s.m > 4) std::fill(x.begin() + 3 * s.in, x.begin() + 4 * s.in, 0.0f);   // row 3: zeros
    for (auto& v : scale) v = positive(rng);
    for (auto& v : bias) v = normal(rng);
    const auto w = random_codes(s.out * s.in, rng);
    const auto sums = row_sums(w, s.out, s.in);
    for (bool with_bias : {false, true}) {
      const auto want = expected_y(x, s.m, w, scale, with_bias ? &bias : nullptr, s.out, s.in);
      for (const auto& [name, be] : testing::test_backends(holder)) {
        auto xb = upload(*be, x), wb = upload(*be, w), sb = upload(*be, scale);
        auto rb = upload(*be, sums), bb = upload(*be, bias);
        auto yb = be->allocate(s.m * s.out * sizeof(float));
        const kernels::WeightInt8 wd{wb.get(), sb.get(), rb.get(), s.out, s.in};
        be->gemm_int8(*xb, s.m, wd, with_bias ? bb.get() : nullptr, *yb);
        const auto y = download<float>(*be, *yb, s.m * s.out);
        size_t wrong = 0;
        for (size_t i = 0; i < y.size(); ++i) wrong += !same_float(y[i], want[i]);
        EXPECT_EQ(wrong, 0u) << name << " m" << s.m << " W[" << s.out << "x" << s.in << "]"
                             << (with_bias ? " bias" : "");
      }
    }
  }
}

TEST(GemmInt8Kernels, EveryCoreComputesTheSameFloats) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const size_t m = 9, out = 70, in = 300;
  std::vector<float> x(m * in), scale(out, 0.7f), bias(out);
  for (auto& v : x) v = normal(rng);
  for (auto& v : bias) v = normal(rng);
  const auto w = random_codes(out * in, rng);
  const auto sums = row_sums(w, out, in);
  const WeightInt8View view{w.data(), scale.data(), sums.data(), out, in};
  std::vector<float> ref(m * out);
  kernels::cpu::isa_kernels(kernels::CpuIsa::Generic)
      .gemm_int8_core(Int8Core::Ref, x.data(), m, view, bias.data(), ref.data());
  for (const PathCore& c : path_cores()) {
    std::vector<float> y(m * out);
    c.path->gemm_int8_core(c.core, x.data(), m, view, bias.data(), y.data());
    EXPECT_EQ(y, ref) << c.name();
  }
}

TEST(GemmInt8Kernels, RefusesBadOperands) {
  kernels::Backend& cpu = kernels::cpu_backend();
  auto x = cpu.allocate(4 * 8 * sizeof(float)), y = cpu.allocate(4 * 8 * sizeof(float));
  auto codes = cpu.allocate(8 * 8), scale = cpu.allocate(8 * sizeof(float));
  auto sums = cpu.allocate(8 * sizeof(int32_t));
  kernels::WeightInt8 w{codes.get(), scale.get(), sums.get(), 8, 8};
  expect_error([&] { cpu.gemm_int8(*x, 5, w, nullptr, *y); }, "buffer 'x' holds 128 bytes");
  kernels::WeightInt8 no_sums = w;
  no_sums.row_sums = nullptr;
  expect_error([&] { cpu.gemm_int8(*x, 4, no_sums, nullptr, *y); },
               "needs 'codes', 'scale' and 'row_sums'");
  kernels::WeightInt8 wide = w;
  wide.in_features = kernels::kMaxInt8InFeatures + 1;
  expect_error([&] { cpu.gemm_int8(*x, 1, wide, nullptr, *y); }, "could overflow");
}

}  // namespace
}  // namespace lowbit
