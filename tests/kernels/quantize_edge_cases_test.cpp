// The quantizers' numeric edge cases as one table (docs/RELIABILITY.md):
// every quantizer (8-bit dynamic blockwise at two block sizes, NF4, FP4) on
// every backend present, over all-zero blocks, one huge value, denormals,
// inf and NaN, and sizes 0, 1 and block +- 1. The rule checked
// (kernels/shared_math.h, the absmax rule, lb_absmax_scales):
//   - absmax is the block's max |x| exactly; NaN if the block holds a NaN,
//     else inf if it holds an inf;
//   - an all-zero block stores the zero code and dequantizes to 0;
//   - a block holding inf or NaN stores the zero code and dequantizes to NaN
//     in every element, and leaves every other block as if it were alone;
//   - an element equal to absmax dequantizes to itself exactly (every
//     codebook holds +1; the 4-bit ones -1 too), huge and denormal included;
//   - every backend gives the CPU's bits.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/backend.h"
#include "kernels/codebook.h"
#include "kernels/dtype.h"
#include "tests/kernels/backends.h"

namespace lowbit {
namespace {

using kernels::Backend;
using kernels::DType;
using kernels::Format4;
using testing::download;
using testing::upload;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kHuge = 3.0e38f;  // near FLT_MAX: x / absmax must not overflow
constexpr float kDenormal = 1.0e-40f;

struct Quantizer {
  std::string name;
  bool four_bit;
  Format4 format;
  int blocksize;
};

const std::vector<Quantizer>& quantizers() {
  static const std::vector<Quantizer> all = {{"dynamic8/64", false, Format4::NF4, 64},
                                             {"dynamic8/256", false, Format4::NF4, 256},
                                             {"nf4/64", true, Format4::NF4, 64},
                                             {"fp4/64", true, Format4::FP4, 64}};
  return all;
}

struct Quantized {
  std::vector<float> absmax;
  std::vector<uint8_t> codes;  // one per element (4-bit codes unpacked)
  std::vector<float> back;     // dequantized
};

Quantized run(Backend& be, const Quantizer& q, const std::vector<float>& x) {
  const size_t n = x.size(), nb = kernels::num_blocks(n, q.blocksize);
  Quantized out;
  // Buffers of at least one byte: a backend need not allocate zero bytes.
  const auto xb = upload(be, x.empty() ? std::vector<float>{0.0f} : x);
  auto absmax = be.allocate(std::max<size_t>(nb, 1) * sizeof(float));
  auto back = be.allocate(std::max<size_t>(n, 1) * sizeof(float));
  if (!q.four_bit) {
    const auto code = kernels::dynamic_map(true);
    const auto cb = upload(be, std::vector<float>(code.begin(), code.end()));
    auto codes = be.allocate(std::max<size_t>(n, 1));
    be.quantize_blockwise(*xb, DType::F32, n, q.blocksize, *cb, *absmax, *codes);
    be.dequantize_blockwise(*codes, *absmax, *cb, n, q.blocksize, *back, DType::F32);
    out.codes = download<uint8_t>(be, *codes, n);
  } else {
    const size_t bytes = std::max<size_t>(kernels::packed_4bit_bytes(n), 1);
    auto packed = be.allocate(bytes);
    be.quantize_4bit(*xb, DType::F32, n, q.blocksize, q.format, *absmax, *packed);
    be.dequantize_4bit(*packed, *absmax, n, q.blocksize, q.format, *back, DType::F32);
    const auto p = download<uint8_t>(be, *packed, kernels::packed_4bit_bytes(n));
    for (size_t i = 0; i < n; ++i) out.codes.push_back(i % 2 ? p[i / 2] & 15 : p[i / 2] >> 4);
  }
  out.absmax = download<float>(be, *absmax, nb);
  out.back = download<float>(be, *back, n);
  return out;
}

uint8_t zero_code(const Quantizer& q) {
  if (q.four_bit) return kernels::format4_table(q.format).zero_code;
  const auto code = kernels::dynamic_map(true);
  return uint8_t(kernels::zero_index(code.data(), 256));
}

// A block of `len` small values 0.001 * (1 + i % 7) * (-1)^i.
std::vector<float> ordinary(size_t len) {
  std::vector<float> v(len);
  for (size_t i = 0; i < len; ++i) v[i] = 0.001f * float(1 + i % 7) * (i % 2 ? -1.0f : 1.0f);
  return v;
}

float max_abs(const std::vector<float>& x, size_t begin, size_t end) {
  float m = 0.0f;
  for (size_t i = begin; i < end; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// The bits of a float, NaN payloads folded (the rule says NaN, not which).
uint32_t bits(float f) {
  return std::isnan(f) ? 0x7fc00000u : kernels::float_bits(f);
}

struct Case {
  std::string name;
  std::vector<float> x;
};

// The table's inputs for a block size: each is checked by the rule above.
std::vector<Case> cases(int bs) {
  const size_t b = size_t(bs);
  std::vector<Case> all;
  for (const size_t n : {size_t(0), size_t(1), b - 1, b, b + 1, 3 * b + 1})
    all.push_back({"size " + std::to_string(n), ordinary(n)});
  all.push_back({"all-zero block", std::vector<float>(2 * b + 3, 0.0f)});
  std::vector<float> x = ordinary(2 * b + 3);
  std::fill(x.begin() + bs, x.begin() + 2 * bs, 0.0f);  // the middle block
  all.push_back({"zero block between others", x});
  for (const float huge : {kHuge, -kHuge, std::numeric_limits<float>::max()}) {
    x = ordinary(2 * b);
    x[3] = huge;
    all.push_back({"one huge value " + std::to_string(huge), x});
  }
  x = std::vector<float>(b + 5, kDenormal);
  for (size_t i = 0; i < x.size(); i += 3) x[i] = -kDenormal * 0.5f;
  all.push_back({"denormals", x});
  x = ordinary(b + 5);
  x[1] = std::numeric_limits<float>::denorm_min();
  all.push_back({"a denormal among normals", x});
  for (const float bad : {kNaN, -kNaN, kInf, -kInf}) {
    for (const size_t at : {size_t(0), b / 2, b - 1}) {
      x = ordinary(3 * b - 1);
      x[b + at] = bad;  // in the second block
      all.push_back({"non-finite " + std::to_string(bad) + " at " + std::to_string(at), x});
    }
  }
  x = ordinary(2 * b);
  x[b + 1] = kInf;
  x[b + 2] = kNaN;  // NaN wins over inf
  all.push_back({"inf and NaN in one block", x});
  x = ordinary(b - 1);
  x[b - 2] = kNaN;  // in a short last block
  all.push_back({"NaN in the short last block", x});
  return all;
}

TEST(QuantizeEdgeCases, EveryQuantizerFollowsTheRuleOnEveryBackend) {
  std::shared_ptr<Backend> holder;
  const auto backends = testing::test_backends(holder);
  for (const Quantizer& q : quantizers()) {
    const uint8_t zero = zero_code(q);
    for (const Case& c : cases(q.blocksize)) {
      SCOPED_TRACE(q.name + ", " + c.name);
      const size_t n = c.x.size(), bs = size_t(q.blocksize);
      const Quantized cpu = run(kernels::cpu_backend(), q, c.x);
      ASSERT_EQ(cpu.absmax.size(), kernels::num_blocks(n, q.blocksize));
      for (size_t b = 0; b < cpu.absmax.size(); ++b) {
        const size_t begin = b * bs, end = std::min(n, begin + bs);
        bool nan = false, inf = false;
        for (size_t i = begin; i < end; ++i) {
          nan |= std::isnan(c.x[i]);
          inf |= std::isinf(c.x[i]);
        }
        if (nan || inf) {
          if (nan) EXPECT_TRUE(std::isnan(cpu.absmax[b])) << "block " << b;
          else EXPECT_EQ(cpu.absmax[b], kInf) << "block " << b;
          for (size_t i = begin; i < end; ++i) {
            EXPECT_EQ(cpu.codes[i], zero) << i;
            EXPECT_TRUE(std::isnan(cpu.back[i])) << i << ": " << cpu.back[i];
          }
          // The other blocks are as if quantized alone.
          std::vector<float> alone(c.x);
          std::fill(alone.begin() + ptrdiff_t(begin), alone.begin() + ptrdiff_t(end), 0.0f);
          const Quantized ref = run(kernels::cpu_backend(), q, alone);
          for (size_t i = 0; i < n; ++i) {
            if (i < begin || i >= end) {
              EXPECT_EQ(bits(cpu.back[i]), bits(ref.back[i])) << i;
            }
          }
          continue;
        }
        const float m = max_abs(c.x, begin, end);
        EXPECT_EQ(bits(cpu.absmax[b]), bits(m)) << "block " << b;
        for (size_t i = begin; i < end; ++i) {
          if (m == 0.0f) {
            EXPECT_EQ(cpu.codes[i], zero) << i;
            EXPECT_EQ(cpu.back[i], 0.0f) << i;
            continue;
          }
          ASSERT_TRUE(std::isfinite(cpu.back[i])) << i << ": " << c.x[i];
          // Every codebook holds +1 (NF4 and FP4 also -1; the signed dynamic
          // map's lowest entry is above -1), so +absmax comes back exactly.
          if (c.x[i] == m || (q.four_bit && c.x[i] == -m)) {
            EXPECT_EQ(cpu.back[i], c.x[i]) << i;
          }
          // Nearest code: within half the widest gap of any codebook (FP4's,
          // from 2/3 to 1), i.e. absmax / 6, plus float rounding.
          EXPECT_LE(std::fabs(double(cpu.back[i]) - double(c.x[i])), (1.0 / 6 + 1e-6) * m) << i;
        }
      }
      // Other backends, OpenCL's quantizers in both work layouts.
      const auto agree = [&](Backend& be, const std::string& name) {
        SCOPED_TRACE(name);
        const Quantized other = run(be, q, c.x);
        EXPECT_EQ(other.codes, cpu.codes);
        ASSERT_EQ(other.absmax.size(), cpu.absmax.size());
        for (size_t b = 0; b < cpu.absmax.size(); ++b)
          EXPECT_EQ(bits(other.absmax[b]), bits(cpu.absmax[b])) << "block " << b;
        for (size_t i = 0; i < n; ++i) EXPECT_EQ(bits(other.back[i]), bits(cpu.back[i])) << i;
      };
      for (const auto& [name, be] : backends)
        if (be != &kernels::cpu_backend()) testing::for_each_layout(*be, name, agree);
    }
  }
}

}  // namespace
}  // namespace lowbit
