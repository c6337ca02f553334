// Every instruction-set path of the CPU kernels (kernels/cpu_isa.h) against
// the generic one on the same inputs. Bit for bit where the contract promises
// bits: 8-bit and 4-bit codes and absmax, dequantized values, optimizer steps
// (parameters, states, skipped blocks) and their sums, the int8 matmul. To
// float rounding for the 4-bit matmuls, whose vector paths sum in other
// orders and fuse multiply-adds. Plus the LOWBIT_CPU_ISA override's rules.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/backend.h"
#include "kernels/blas_core.h"
#include "kernels/codebook.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu_isa.h"
#include "tests/kernels/optimizer_reference.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using kernels::CpuIsa;
using kernels::DType;
using kernels::Format4;
using kernels::cpu::IsaKernels;

const IsaKernels& generic() { return kernels::cpu::isa_kernels(CpuIsa::Generic); }

// The paths this CPU runs besides the generic one (none on a baseline CPU).
std::vector<const IsaKernels*> vector_paths() {
  std::vector<const IsaKernels*> out;
  for (CpuIsa isa : kernels::cpu_isas())
    if (isa != CpuIsa::Generic) out.push_back(&kernels::cpu::isa_kernels(isa));
  return out;
}

std::string name(const IsaKernels& path) { return kernels::cpu_isa_name(path.isa); }

// Normal values with block-to-block scales from 1e-6 to 1e3, some exact zeros
// and a whole zero block: every code and the zero-absmax rule get used.
std::vector<float> test_values(size_t n, int blocksize, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> exponent(-6.0f, 3.0f);
  std::vector<float> x(n);
  float scale = 1.0f;
  for (size_t i = 0; i < n; ++i) {
    if (i % size_t(blocksize) == 0) scale = std::pow(10.0f, exponent(rng));
    x[i] = (i % 13 == 5) ? 0.0f : scale * normal(rng);
  }
  for (size_t i = size_t(blocksize); i < std::min(n, size_t(2 * blocksize)); ++i) x[i] = 0.0f;
  return x;
}

TEST(IsaPaths, EightBitQuantizationIsBitIdentical) {
  for (bool is_signed : {true, false}) {
    const auto map = kernels::dynamic_map(is_signed);
    for (int bs : {64, 256, 4096})
      for (DType type : testing::kFloatTypes)
        for (bool stochastic : {false, true}) {
          const size_t n = 3 * size_t(bs) + 77;
          std::vector<float> values = test_values(n, bs, unsigned(bs));
          if (!is_signed)
            for (float& v : values) v = std::fabs(v);
          const std::vector<uint8_t> x = testing::encode(values, type);
          const size_t nb = kernels::num_blocks(n, bs);
          const kernels::StochasticRounding rounding{stochastic, 0x1234567890abcdefull};
          const auto run = [&](const IsaKernels& path, std::vector<uint8_t>& codes,
                               std::vector<float>& absmax, std::vector<uint8_t>& out) {
            codes.assign(n, 0);
            absmax.assign(nb, -1.0f);
            out.assign(x.size(), 0);
            path.quantize_blockwise(x.data(), type, n, bs, map.data(), absmax.data(),
                                    codes.data(), rounding);
            path.dequantize_blockwise(codes.data(), absmax.data(), map.data(), n, bs, out.data(),
                                      type, 0.25f);
          };
          std::vector<uint8_t> codes, out;
          std::vector<float> absmax;
          run(generic(), codes, absmax, out);
          for (const IsaKernels* path : vector_paths()) {
            const std::string label = name(*path) + (is_signed ? " signed" : " unsigned") +
                                      " bs" + std::to_string(bs) + " " +
                                      kernels::dtype_name(type) + (stochastic ? " stochastic" : "");
            std::vector<uint8_t> c, o;
            std::vector<float> a;
            run(*path, c, a, o);
            EXPECT_EQ(c, codes) << label;
            EXPECT_EQ(0, std::memcmp(a.data(), absmax.data(), nb * sizeof(float))) << label;
            EXPECT_EQ(o, out) << label;
          }
        }
  }
}

TEST(IsaPaths, FourBitQuantizationIsBitIdentical) {
  for (Format4 format : {Format4::NF4, Format4::FP4})
    for (int bs : {32, 64, 4096})
      for (DType type : testing::kFloatTypes) {
        const size_t n = 2 * size_t(bs) + 33;  // an odd tail: a padding nibble
        const std::vector<uint8_t> x = testing::encode(test_values(n, bs, 5), type);
        const size_t nb = kernels::num_blocks(n, bs);
        const auto run = [&](const IsaKernels& path, std::vector<uint8_t>& packed,
                             std::vector<float>& absmax, std::vector<uint8_t>& out) {
          packed.assign((n + 1) / 2, 0);
          absmax.assign(nb, -1.0f);
          out.assign(x.size(), 0);
          path.quantize_4bit(x.data(), type, n, bs, format, absmax.data(), packed.data());
          path.dequantize_4bit(packed.data(), absmax.data(), n, bs, format, out.data(), type);
        };
        std::vector<uint8_t> packed, out;
        std::vector<float> absmax;
        run(generic(), packed, absmax, out);
        for (const IsaKernels* path : vector_paths()) {
          const std::string label = name(*path) + (format == Format4::NF4 ? " nf4" : " fp4") +
                                    " bs" + std::to_string(bs) + " " + kernels::dtype_name(type);
          std::vector<uint8_t> p, o;
          std::vector<float> a;
          run(*path, p, a, o);
          EXPECT_EQ(p, packed) << label;
          EXPECT_EQ(0, std::memcmp(a.data(), absmax.data(), nb * sizeof(float))) << label;
          EXPECT_EQ(o, out) << label;
        }
      }
}

TEST(IsaPaths, OptimizerStepsAndSumsAreBitIdentical) {
  kernels::Backend& cpu = kernels::cpu_backend();
  const size_t n = 5 * 256 + 31;
  for (const testing::Case& c : testing::cases())
    for (bool quantized : {true, false})
      for (DType type : testing::kFloatTypes) {
        const testing::Operands o = testing::make_operands(c, type, quantized, n, 256, 13);
        // The step sees one infinite gradient: its block is skipped on every
        // path alike. The norms (which the host only uses when every gradient
        // is finite) see the finite one.
        testing::Operands inf_grad = o;
        {
          std::vector<float> g(n);
          for (size_t i = 0; i < n; ++i) g[i] = float(testing::decode(o.grad, type, i));
          g[300] = INFINITY;
          inf_grad.grad = testing::encode(g, type);
        }
        const auto run = [&](const IsaKernels& path, testing::Result& r, kernels::UpdateNorms& u,
                             kernels::GradientStats& g) {
          testing::Uploaded finite(cpu, c, o), up(cpu, c, inf_grad);
          u = path.optimizer_update_norms(finite.op, testing::make_args(c));
          const void* grad = kernels::cpu::CpuBackend::host(*up.op.grad);
          g = path.gradient_stats(grad, type, n, 256, true);
          // The check alone (no sums) decides the same.
          EXPECT_FALSE(path.gradient_stats(grad, type, n, 256, false).finite) << name(path);
          const size_t rejected = path.optimizer_update(up.op, testing::make_args(c));
          r = up.download_all(cpu, inf_grad);
          r.rejected = rejected;
        };
        testing::Result want;
        kernels::UpdateNorms want_norms;
        kernels::GradientStats want_stats;
        run(generic(), want, want_norms, want_stats);
        EXPECT_EQ(want.rejected, 1u);
        EXPECT_FALSE(want_stats.finite);
        for (const IsaKernels* path : vector_paths()) {
          const std::string label = name(*path) + " " + c.name +
                                    (quantized ? " 8bit " : " 32bit ") + kernels::dtype_name(type);
          testing::Result got;
          kernels::UpdateNorms norms;
          kernels::GradientStats stats;
          run(*path, got, norms, stats);
          EXPECT_EQ(got.rejected, want.rejected) << label;
          EXPECT_EQ(got.param, want.param) << label;
          EXPECT_EQ(got.codes1, want.codes1) << label;
          EXPECT_EQ(got.codes2, want.codes2) << label;
          EXPECT_EQ(got.absmax1, want.absmax1) << label;
          EXPECT_EQ(got.absmax2, want.absmax2) << label;
          EXPECT_EQ(got.state1, want.state1) << label;
          EXPECT_EQ(got.state2, want.state2) << label;
          EXPECT_EQ(norms.update_sq, want_norms.update_sq) << label;
          EXPECT_EQ(norms.param_sq, want_norms.param_sq) << label;
          EXPECT_EQ(stats.sum_sq, want_stats.sum_sq) << label;
          EXPECT_EQ(stats.finite, want_stats.finite) << label;
        }
      }
}

TEST(IsaPaths, FourBitMatmulsAgreeToFloatRounding) {
  const size_t out = 70, in = 512, m = 5;
  const int bs = 64;
  for (Format4 format : {Format4::NF4, Format4::FP4}) {
    const std::vector<float> w = test_values(out * in, bs, 9);
    std::vector<uint8_t> packed(out * in / 2);
    std::vector<float> absmax(kernels::num_blocks(out * in, bs));
    generic().quantize_4bit(w.data(), DType::F32, out * in, bs, format, absmax.data(),
                            packed.data());
    std::vector<float> wq(out * in);
    generic().dequantize_4bit(packed.data(), absmax.data(), out * in, bs, format, wq.data(),
                              DType::F32);
    kernels::cpu::Weight4bitView view{};
    view.packed = packed.data();
    view.absmax = absmax.data();
    view.out_features = out;
    view.in_features = in;
    view.block_shift = 6;
    view.value = kernels::format4_table(format).value.data();
    std::mt19937 rng(2);
    std::normal_distribution<float> normal;
    std::vector<float> x(m * in), dy(m * out), bias(out);
    for (float& v : x) v = normal(rng);
    for (float& v : dy) v = normal(rng);
    for (float& v : bias) v = normal(rng);
    // Any summation order of k products is within k * 2^-24 * sum |products|
    // of the exact sum (and a fused multiply-add only removes roundings); two
    // paths differ by at most twice that, doubled again for the per-block
    // scale and bias roundings.
    const auto tolerance = [](const float* a, size_t a_stride, const float* b, size_t b_stride,
                              size_t k) {
      double s = 0;
      for (size_t i = 0; i < k; ++i) s += std::fabs(double(a[i * a_stride]) * b[i * b_stride]);
      return 4.0 * double(k) * 0x1p-24 * s + 1e-30;
    };
    for (size_t rows : {size_t(1), m}) {
      std::vector<float> want(rows * out), want_dx(rows * in);
      const auto forward = [&](const IsaKernels& path, std::vector<float>& y) {
        if (rows == 1)
          path.gemv_4bit(x.data(), view, bias.data(), y.data(), DType::F32);
        else
          path.gemm_4bit(x.data(), rows, view, bias.data(), y.data(), DType::F32);
      };
      forward(generic(), want);
      generic().gemm_4bit_input_grad(dy.data(), rows, view, want_dx.data(), DType::F32);
      for (const IsaKernels* path : vector_paths()) {
        std::vector<float> y(rows * out), dx(rows * in);
        forward(*path, y);
        path->gemm_4bit_input_grad(dy.data(), rows, view, dx.data(), DType::F32);
        for (size_t r = 0; r < rows; ++r) {
          for (size_t o = 0; o < out; ++o)
            ASSERT_NEAR(y[r * out + o], want[r * out + o],
                        tolerance(&x[r * in], 1, &wq[o * in], 1, in) +
                            4 * 0x1p-24 * std::fabs(bias[o]))
                << name(*path) << " rows " << rows << " y[" << r << ", " << o << "]";
          for (size_t k = 0; k < in; ++k)
            ASSERT_NEAR(dx[r * in + k], want_dx[r * in + k],
                        tolerance(&dy[r * out], 1, &wq[k], in, out))
                << name(*path) << " rows " << rows << " dx[" << r << ", " << k << "]";
        }
      }
    }
  }
}

TEST(IsaPaths, Int8MatmulIsBitIdentical) {
  const size_t m = 7, out = 70, in = 300;
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> code(-127, 127);
  std::vector<float> x(m * in), scale(out), bias(out);
  std::vector<int8_t> w(out * in);
  std::vector<int32_t> sums(out, 0);
  for (float& v : x) v = normal(rng);
  for (float& v : scale) v = std::fabs(normal(rng));
  for (float& v : bias) v = normal(rng);
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = int8_t(code(rng));
    sums[i / in] += w[i];
  }
  const kernels::cpu::WeightInt8View view{w.data(), scale.data(), sums.data(), out, in};
  std::vector<float> want(m * out);
  generic().gemm_int8(x.data(), m, view, bias.data(), want.data());
  for (const IsaKernels* path : vector_paths()) {
    std::vector<float> y(m * out);
    path->gemm_int8(x.data(), m, view, bias.data(), y.data());
    EXPECT_EQ(0, std::memcmp(y.data(), want.data(), y.size() * sizeof(float))) << name(*path);
  }
}

TEST(IsaPaths, OverrideIsClampedToTheCpuAndUnknownValuesAreRefused) {
  const std::vector<CpuIsa> runnable = kernels::cpu_isas();
  ASSERT_FALSE(runnable.empty());
  EXPECT_EQ(runnable.front(), CpuIsa::Generic);
  EXPECT_EQ(kernels::cpu_isa_for(nullptr), runnable.back());
  EXPECT_EQ(kernels::cpu_isa_for(""), runnable.back());
  EXPECT_EQ(kernels::cpu_isa_for("generic"), CpuIsa::Generic);
  const auto runs = [&](CpuIsa isa) {
    return std::find(runnable.begin(), runnable.end(), isa) != runnable.end();
  };
#if defined(__aarch64__)
  // NEON is aarch64's baseline; the x86 paths clamp to the generic one.
  EXPECT_TRUE(runs(CpuIsa::Neon));
  EXPECT_FALSE(runs(CpuIsa::Avx2));
  EXPECT_EQ(runnable.back(), CpuIsa::Neon);
  EXPECT_EQ(kernels::cpu_isa_for("neon"), CpuIsa::Neon);
  EXPECT_EQ(kernels::cpu_isa_for("avx512"), CpuIsa::Generic);
  EXPECT_EQ(kernels::cpu_isa_for("avx2"), CpuIsa::Generic);
  // The name the benchmark header prints for the path that runs by default.
  EXPECT_STREQ(kernels::cpu_isa_name(kernels::cpu_isa_for(nullptr)), "neon");
#else
  EXPECT_FALSE(runs(CpuIsa::Neon));
  EXPECT_EQ(kernels::cpu_isa_for("neon"), CpuIsa::Generic);
  EXPECT_EQ(kernels::cpu_isa_for("avx512"), runnable.back());
  // avx2 where the CPU has it, else the generic path.
  EXPECT_EQ(kernels::cpu_isa_for("avx2"), runs(CpuIsa::Avx2) ? CpuIsa::Avx2 : CpuIsa::Generic);
#endif
  testing::expect_error<kernels::Error>([] { kernels::cpu_isa_for("avx1024"); },
                                        "LOWBIT_CPU_ISA=avx1024 names no CPU kernel path");
  // What runs is what the environment asks for.
  EXPECT_EQ(kernels::cpu_isa(), kernels::cpu_isa_for(std::getenv("LOWBIT_CPU_ISA")));
  EXPECT_EQ(kernels::cpu::active_kernels().isa, kernels::cpu_isa());
}

// The gemvs' weight prefetch (kernels::cpu_prefetch_weights): on by default
// exactly where /proc/cpuinfo names an Intel CPU, and LOWBIT_CPU_PREFETCH's
// rules.
TEST(IsaPaths, WeightPrefetchIsOnForIntelByDefaultAndTheOverrideIsChecked) {
  EXPECT_TRUE(kernels::cpu_prefetch_weights_for("1"));
  EXPECT_FALSE(kernels::cpu_prefetch_weights_for("0"));
  EXPECT_EQ(kernels::cpu_prefetch_weights_for(""), kernels::cpu_prefetch_weights_for(nullptr));
#if !defined(__x86_64__)
  // Off on other architectures (under qemu-user /proc/cpuinfo is the host's).
  EXPECT_FALSE(kernels::cpu_prefetch_weights_for(nullptr));
#else
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, vendor;
  while (vendor.empty() && std::getline(cpuinfo, line))
    if (line.rfind("vendor_id", 0) == 0) vendor = line.substr(line.find(':') + 1);
  if (!vendor.empty()) {
    EXPECT_EQ(kernels::cpu_prefetch_weights_for(nullptr),
              vendor.find("GenuineIntel") != std::string::npos)
        << "vendor:" << vendor;
  }
#endif
  testing::expect_error<kernels::Error>([] { kernels::cpu_prefetch_weights_for("yes"); },
                                        "LOWBIT_CPU_PREFETCH=yes must be 1 or 0");
  EXPECT_EQ(kernels::cpu_prefetch_weights(),
            kernels::cpu_prefetch_weights_for(std::getenv("LOWBIT_CPU_PREFETCH")));
}

// kernels/blas_core.h: OpenBLAS kernels without AVX2 are replaced on a CPU that has AVX2 (and
// FMA): by SkylakeX's where it also has AVX-512, else by Haswell's. Cores with AVX2 kernels, any
// core on a CPU without AVX2, and no OpenBLAS at all are left alone. OpenBLAS compares the
// names without case, and so does the check.
TEST(BlasCore, KernelsWithoutAvx2AreReplacedOnlyOnCpusWithIt) {
  using kernels::wider_blas_core;
  EXPECT_EQ(wider_blas_core("Prescott", true, true), "SkylakeX");
  EXPECT_EQ(wider_blas_core("Prescott", true, false), "Haswell");
  EXPECT_EQ(wider_blas_core("Sandybridge", true, true), "SkylakeX");  // AVX, not AVX2
  EXPECT_EQ(wider_blas_core("Nehalem", true, false), "Haswell");
  EXPECT_EQ(wider_blas_core("Prescott", false, false), "");
  for (const char* wide : {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids", "SKYLAKEX",
                           "haswell"}) {
    EXPECT_EQ(wider_blas_core(wide, true, true), "") << wide;
    EXPECT_EQ(wider_blas_core(wide, true, false), "") << wide;
  }
  EXPECT_EQ(wider_blas_core("", true, true), "");
  EXPECT_EQ(wider_blas_core("Haswellx", true, true), "SkylakeX");  // whole names only
}

}  // namespace
}  // namespace lowbit
