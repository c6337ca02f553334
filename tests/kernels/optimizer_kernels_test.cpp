// The optimizer ops of the kernels contract: one step of every rule against a
// double-precision reference of the published formulas written here (Adam and
// RMSprop as torch documents them, LAMB and Lion as their papers), with 8-bit
// and 32-bit states and every parameter dtype; every backend bit for bit with
// the CPU (and CUDA's sums too); the non-finite guard; the norm and gradient
// sums; operand validation.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/backend.h"
#include "tests/kernels/backends.h"
#include "tests/kernels/optimizer_reference.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using kernels::Backend;
using kernels::DType;
using kernels::OptimizerRule;
using testing::Case;
using testing::cases;
using testing::decode;
using testing::encode;
using testing::kFloatTypes;
using testing::make_args;
using testing::make_operands;
using testing::Operands;
using testing::Ref;
using testing::reference_step;
using testing::Result;
using testing::run_update;
using testing::upload;
using testing::Uploaded;

// The kernel's code for r is nearest (ties within float rounding of r allowed).
::testing::AssertionResult is_nearest_code(const std::vector<float>& qmap, double r, int code) {
  const double d = std::fabs(qmap[size_t(code)] - r);
  for (int k : {code - 1, code + 1}) {
    if (k < 0 || k > 255) continue;
    // 1e-6: r itself carries the float rounding of the state and the division.
    if (std::fabs(qmap[size_t(k)] - r) + 1e-6 < d)
      return ::testing::AssertionFailure()
             << "r=" << r << " got code " << code << " (" << qmap[size_t(code)] << "), code " << k
             << " (" << qmap[size_t(k)] << ") is nearer";
  }
  return ::testing::AssertionSuccess();
}

// Checks one state against the reference values `ref` (per element).
void expect_state(const Operands& o, const std::vector<float>& qmap,
                  const std::vector<uint8_t>& codes, const std::vector<float>& absmax,
                  const std::vector<float>& values, const std::vector<double>& ref,
                  const std::string& label) {
  const size_t n = ref.size(), bs = size_t(o.blocksize);
  if (!o.quantized) {
    double scale = 0;
    for (double v : ref) scale = std::max(scale, std::fabs(v));
    for (size_t i = 0; i < n; ++i)
      // A state is a few float operations on float inputs: relative rounding
      // ~2^-22, bounded here by 1e-6 of the largest state.
      ASSERT_NEAR(values[i], ref[i], 1e-6 * scale) << label << " element " << i;
    return;
  }
  for (size_t b = 0; b * bs < n; ++b) {
    double m = 0;
    for (size_t i = b * bs; i < std::min(n, (b + 1) * bs); ++i) m = std::max(m, std::fabs(ref[i]));
    ASSERT_NEAR(absmax[b], m, 1e-6 * m) << label << " absmax of block " << b;
    for (size_t i = b * bs; i < std::min(n, (b + 1) * bs); ++i)
      ASSERT_TRUE(is_nearest_code(qmap, m == 0 ? 0.0 : ref[i] / m, codes[i]))
          << label << " element " << i;
  }
}

void expect_matches_reference(const Case& c, const Operands& o, const Result& got,
                              const std::string& label) {
  const size_t n = o.n();
  std::vector<double> ref1(n), ref2(n);
  for (size_t i = 0; i < n; ++i) {
    const double p = decode(o.param, o.type, i);
    const Ref r = reference_step(c, p, decode(o.grad, o.type, i), o.s1(i), o.s2(i, c.two_states));
    ref1[i] = r.s1;
    ref2[i] = r.s2;
    // float32: the step is ~10 float operations (relative 1e-6) on top of p,
    // which is itself rounded once or twice (2^-23 each). 16-bit storage: the
    // result is rounded to the type once more, half an ulp of it.
    const double ulp = o.type == DType::F32 ? 0x1p-23 : (o.type == DType::BF16 ? 0x1p-8 : 0x1p-11);
    const double tol = 2 * ulp * std::fabs(r.p) + 1e-6 * std::fabs(r.p - p) + 1e-12;
    ASSERT_NEAR(decode(got.param, o.type, i), r.p, tol) << label << " param " << i;
  }
  expect_state(o, o.qmap1, got.codes1, got.absmax1, got.state1, ref1, label + " state1");
  if (c.two_states)
    expect_state(o, o.qmap2, got.codes2, got.absmax2, got.state2, ref2, label + " state2");
}

// Two backends' results of one step agree in every byte: parameters, codes,
// absmax and the count of rejected blocks.
void expect_same_step(const Result& a, const Result& b, const std::string& label) {
  EXPECT_EQ(a.rejected, b.rejected) << label;
  EXPECT_EQ(a.param, b.param) << label;
  EXPECT_EQ(a.codes1, b.codes1) << label;
  EXPECT_EQ(a.codes2, b.codes2) << label;
  EXPECT_EQ(a.absmax1, b.absmax1) << label;
  EXPECT_EQ(a.absmax2, b.absmax2) << label;
}

class OptimizerKernels : public ::testing::Test {
 protected:
  std::vector<std::pair<std::string, Backend*>> backends() {
    return testing::test_backends(opencl_);
  }
  // agree(backend, label) for every backend but the CPU; OpenCL's in both
  // work layouts of its update, whatever the device is.
  template <typename Agree>
  void for_each_other_backend(Agree&& agree) {
    for (auto [bname, be] : backends())
      if (be != &kernels::cpu_backend()) testing::for_each_layout(*be, bname, agree);
  }
  std::shared_ptr<Backend> opencl_;
};

TEST_F(OptimizerKernels, EveryRuleMatchesDoubleReference) {
  const size_t n = 3 * 256 + 77;  // a short tail block
  for (auto [bname, be] : backends())
    for (const Case& c : cases())
      for (bool quantized : {true, false})
        for (DType type : kFloatTypes) {
          const std::string label =
              bname + "/" + c.name + (quantized ? "/8bit/" : "/32bit/") + kernels::dtype_name(type);
          const Operands o = make_operands(c, type, quantized, n, 256, 7);
          const Result got = run_update(*be, c, o);
          EXPECT_EQ(got.rejected, 0u) << label;
          expect_matches_reference(c, o, got, label);
        }
}

TEST_F(OptimizerKernels, BlockSizesAndTails) {
  const Case& c = cases()[1];
  for (auto [bname, be] : backends())
    for (int bs : {64, 128, 1024, 4096})
      for (size_t n : {size_t(1), size_t(bs) - 1, size_t(3 * bs + 5)}) {
        const Operands o = make_operands(c, DType::F32, true, n, bs, unsigned(n));
        expect_matches_reference(c, o, run_update(*be, c, o),
                                 bname + "/bs" + std::to_string(bs) + "/n" + std::to_string(n));
      }
}

TEST_F(OptimizerKernels, EveryBackendAgreesWithTheCpuBitForBit) {
  const size_t n = 5 * 256 + 31;
  for (auto [bname, be] : backends()) {
    if (be == &kernels::cpu_backend()) continue;
    for (const Case& c : cases())
      for (bool quantized : {true, false})
        for (DType type : kFloatTypes) {
          const std::string label = bname + "/" + c.name + (quantized ? "/8bit/" : "/32bit/") +
                                    kernels::dtype_name(type);
          const Operands o = make_operands(c, type, quantized, n, 256, 11);
          const Result a = run_update(kernels::cpu_backend(), c, o);
          const Result b = run_update(*be, c, o);
          // Every backend evaluates the shared rules with correctly rounded
          // operations and no contraction, so every byte must agree.
          EXPECT_EQ(a.param, b.param) << label;
          EXPECT_EQ(a.codes1, b.codes1) << label;
          EXPECT_EQ(a.codes2, b.codes2) << label;
          EXPECT_EQ(a.absmax1, b.absmax1) << label;
          EXPECT_EQ(a.absmax2, b.absmax2) << label;
          EXPECT_EQ(a.state1, b.state1) << label;
          EXPECT_EQ(a.state2, b.state2) << label;
        }
  }
}

// Bit for bit at the smallest, the default and the largest block size, on
// tensors of whole blocks only (the vectorised path of the device kernels)
// and with a short tail block (their element-wise path), in both work layouts
// of the OpenCL update (a block per work-item, as on CPU devices; 8 elements
// per item with the block's maxima reduced in local memory, as on GPUs: 8, 32
// and 512 items per block here), and with a codebook other than the dynamic
// maps: entries 0.001 apart, closer than the buckets of the OpenCL encoding
// table (2^-8 wide in [0.5, 1)), so the kernel searches it instead. Every
// parameter type at block size 256 (each layout and type is a separate
// program on the device, so the grid is kept small).
TEST_F(OptimizerKernels, EveryBackendAgreesWithTheCpuAtEveryBlockSizeAndCodebook) {
  std::vector<float> fine(256);
  for (int i = 0; i < 256; ++i)
    fine[size_t(i)] = i == 0 ? -1.0f : (i == 255 ? 1.0f : 0.5f + float(i) * 1e-3f);
  const std::vector<std::pair<std::string, const std::vector<float>*>> codebooks = {
      {"dynamic", nullptr}, {"fine", &fine}};
  const auto agree = [&](Backend& be, const std::string& bname) {
    for (int bs : {64, 256, 4096})
      for (size_t n : {size_t(4 * bs), size_t(2 * bs + 9)})
        for (const auto& [cname, codebook] : codebooks)
          for (const Case& c : {cases()[1], cases()[3]})
            for (DType type : kFloatTypes) {
              if (bs != 256 && type != DType::F32) continue;
              const std::string label = bname + "/bs" + std::to_string(bs) + "/n" +
                                        std::to_string(n) + "/" + cname + "/" + c.name + "/" +
                                        kernels::dtype_name(type);
              Operands o = make_operands(c, type, true, n, bs, unsigned(n + bs));
              if (codebook) o.qmap1 = o.qmap2 = *codebook;
              const Result a = run_update(kernels::cpu_backend(), c, o);
              const Result b = run_update(be, c, o);
              expect_same_step(a, b, label);
            }
  };
  for_each_other_backend(agree);
}

// A tensor of more blocks than a device runs groups at once (3M elements:
// 12,000 blocks of 256; the H200 runs 4,224 at a time through OpenCL, PoCL on
// two cores 64), so that each of the OpenCL update's work-groups walks
// several blocks with the code tables it copied into local memory: bit for bit
// with the CPU in both layouts, for every rule, a tail block included; and
// the norm pass over the same tensor against the CPU's (float sums per block
// in another order: 1e-5 relative, as UpdateNormsMatchReference).
TEST_F(OptimizerKernels, EveryBackendAgreesWithTheCpuWhenGroupsWalkManyBlocks) {
  const size_t n = 12000 * 256 + 77;
  const auto agree = [&](Backend& be, const std::string& bname) {
    for (const Case& c : cases()) {
      const std::string label = bname + "/" + c.name;
      const Operands o = make_operands(c, DType::F32, true, n, 256, 29);
      const Result a = run_update(kernels::cpu_backend(), c, o);
      const Result b = run_update(be, c, o);
      expect_same_step(a, b, label);
      Uploaded on_cpu(kernels::cpu_backend(), c, o), here(be, c, o);
      const kernels::UpdateNorms want =
          kernels::cpu_backend().optimizer_update_norms(on_cpu.op, make_args(c));
      const kernels::UpdateNorms got = be.optimizer_update_norms(here.op, make_args(c));
      EXPECT_NEAR(got.update_sq, want.update_sq, 1e-5 * want.update_sq) << label;
      EXPECT_NEAR(got.param_sq, want.param_sq, 1e-5 * want.param_sq) << label;
    }
  };
  for_each_other_backend(agree);
}

#ifdef LOWBIT_WITH_OPENCL
// The OpenCL gradient check indexes in 32 bits wherever the tensor allows, so the cases above
// never reach its 64-bit form (tensors of 2^31 elements and more): on a backend that keeps
// 64-bit indices, the sums in the CPU's order in both layouts (tail blocks included), and the
// non-finite check.
TEST_F(OptimizerKernels, OpenClGradientStatsWithSixtyFourBitIndicesAgreeWithTheCpu) {
  LOWBIT_REQUIRE_OPENCL(cl);
  const auto wide = testing::opencl_with_wide_indices(*cl);
  Backend& cpu = kernels::cpu_backend();
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> g(5 * 256 + 31);
  for (auto& v : g) v = normal(rng);
  const auto agree = [&](Backend& be, const std::string& bname) {
    for (int bs : {64, 256}) {
      const auto sum = [&](Backend& on) {
        return on.gradient_stats(*testing::upload(on, g), DType::F32, g.size(), bs).sum_sq;
      };
      EXPECT_EQ(sum(be), sum(cpu)) << bname << " block " << bs;
    }
    std::vector<float> bad = g;
    bad[777] = INFINITY;
    EXPECT_FALSE(be.gradient_stats(*testing::upload(be, bad), DType::F32, bad.size(), 256).finite)
        << bname;
  };
  testing::for_each_layout(*wide, "opencl, 64-bit indices", agree);
}
#endif

// Codes of values on and a few ulps around every midpoint of both dynamic
// maps, where the CPU's piecewise-linear vector encoders leave the value to
// their exact search and the OpenCL update decides with its bucket table's
// one comparison: bit for bit with the CPU in both OpenCL layouts. Adam with
// beta1 = beta2 = 0 makes state1 = s * g and state2 = (s * g)^2 (s the
// clipping factor); each block leads with g = 1 / s, so both absmax are 1
// and the states land on the targets within an ulp or two.
TEST_F(OptimizerKernels, EveryBackendEncodesValuesAroundMidpointsAsTheCpu) {
  const Case c{"adam_no_momentum", OptimizerRule::Adam, true, 1e-3, 0.0, 0.0, 1e-8, 0, true, 1, 1};
  const float s = float(testing::kGnormScale);
  std::vector<float> targets;  // state1 values, or (negative) square roots of state2's
  for (bool is_signed : {true, false}) {
    const std::vector<float> q = testing::dynamic_map(is_signed);
    for (int i = 0; i < 255; ++i) {
      float v = (q[size_t(i)] + q[size_t(i) + 1]) * 0.5f;
      for (int d = 0; d < 3; ++d) v = std::nextafter(v, -2.0f);
      for (int d = 0; d < 7; ++d, v = std::nextafter(v, 2.0f)) {
        if (is_signed) {
          targets.push_back(v);
        } else if (v > 0.0f) {
          targets.push_back(-std::sqrt(v));
        }
      }
    }
  }
  std::vector<float> g;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (g.size() % 256 == 0) g.push_back(1.0f / s);
    g.push_back(targets[i] / s);
  }
  Operands o = make_operands(c, DType::F32, true, g.size(), 256, 5);
  o.grad = testing::encode(g, DType::F32);
  const Result a = run_update(kernels::cpu_backend(), c, o);
  const auto agree = [&](Backend& be, const std::string& label) {
    const Result b = run_update(be, c, o);
    EXPECT_EQ(a.codes1, b.codes1) << label;
    EXPECT_EQ(a.codes2, b.codes2) << label;
    EXPECT_EQ(a.absmax1, b.absmax1) << label;
    EXPECT_EQ(a.absmax2, b.absmax2) << label;
  };
  for_each_other_backend(agree);
}

// On a device that shares host memory, wrapped host memory is updated in
// place: once the op returns the host reads the CPU backend's bytes straight
// from its own vectors, with no download.
TEST_F(OptimizerKernels, WrappedHostMemoryIsUpdatedInPlace) {
  LOWBIT_REQUIRE_OPENCL(be);
  const Case& c = cases()[1];
  Operands o = make_operands(c, DType::F32, true, 3 * 256 + 40, 256, 21);
  const Result want = run_update(kernels::cpu_backend(), c, o);
  const auto host = kernels::Location::host();
  // std::vector's storage is 16-byte aligned (operator new), as wrap needs.
  auto wrap = [&](auto& v) { return be->wrap(v.data(), v.size() * sizeof(v[0]), host); };
  auto param = wrap(o.param);
  if (!param) {
    std::vector<float> probe(16);
    EXPECT_EQ(be->wrap(probe.data(), 64, host), nullptr);
    GTEST_SKIP() << be->name() << " does not share host memory: no zero-copy";
  }
  // Memory off the 16-byte grid is not wrapped (the kernels' vector accesses).
  EXPECT_EQ(be->wrap(o.param.data() + 4, 64, host), nullptr);
  auto grad = wrap(o.grad), s1 = wrap(o.codes1), a1 = wrap(o.absmax1), q1 = wrap(o.qmap1);
  auto s2 = wrap(o.codes2), a2 = wrap(o.absmax2), q2 = wrap(o.qmap2);
  ASSERT_TRUE(grad && s1 && a1 && q1 && s2 && a2 && q2);
  kernels::OptimizerOperands op;
  op.rule = c.rule;
  op.n = o.n();
  op.param = param.get();
  op.grad = grad.get();
  op.state1 = s1.get();
  op.absmax1 = a1.get();
  op.qmap1 = q1.get();
  op.state2 = s2.get();
  op.absmax2 = a2.get();
  op.qmap2 = q2.get();
  EXPECT_EQ(be->optimizer_update(op, make_args(c)), 0u);
  EXPECT_EQ(o.param, want.param);
  EXPECT_EQ(o.codes1, want.codes1);
  EXPECT_EQ(o.codes2, want.codes2);
  EXPECT_EQ(o.absmax1, want.absmax1);
  EXPECT_EQ(o.absmax2, want.absmax2);
}

TEST_F(OptimizerKernels, CudaSumsAgreeWithTheCpuBitForBit) {
  // CPU and CUDA share one summation order (kernels/backend.h), so the norms
  // LAMB's trust ratio and max_unorm use and the gradient sums of percentile
  // clipping are the same doubles; 300 blocks span two chunks of 256.
  const auto cuda = testing::cuda_or_null();
  if (!cuda) GTEST_SKIP() << "no CUDA device";
  for (int bs : {64, 256, 4096}) {
    const size_t n = 300 * size_t(bs) + 17;
    for (const Case& c : cases())
      for (bool quantized : {true, false})
        for (DType type : kFloatTypes) {
          const std::string label = c.name + (quantized ? "/8bit/" : "/32bit/") +
                                    kernels::dtype_name(type) + "/bs" + std::to_string(bs);
          const Operands o = make_operands(c, type, quantized, n, bs, 17);
          Uploaded on_cpu(kernels::cpu_backend(), c, o), on_cuda(*cuda, c, o);
          const kernels::UpdateNorms a =
              kernels::cpu_backend().optimizer_update_norms(on_cpu.op, make_args(c));
          const kernels::UpdateNorms b = cuda->optimizer_update_norms(on_cuda.op, make_args(c));
          EXPECT_EQ(a.update_sq, b.update_sq) << label;
          EXPECT_EQ(a.param_sq, b.param_sq) << label;
          const kernels::GradientStats ga =
              kernels::cpu_backend().gradient_stats(*on_cpu.op.grad, type, n, bs);
          const kernels::GradientStats gb = cuda->gradient_stats(*on_cuda.op.grad, type, n, bs);
          EXPECT_EQ(ga.sum_sq, gb.sum_sq) << label;
          EXPECT_EQ(ga.finite, gb.finite) << label;
          EXPECT_EQ(ga.finite, cuda->gradient_stats(*on_cuda.op.grad, type, n, bs, false).finite)
              << label;
        }
  }
}

TEST_F(OptimizerKernels, AllZeroBlockTakesTheZeroCode) {
  // A zero gradient on a zero state leaves the states at 0: absmax 0 and the
  // code of 0.0 (index 127 of the signed map, 0 of the unsigned one).
  const Case& c = cases()[1];
  for (auto [bname, be] : backends()) {
    Operands o = make_operands(c, DType::F32, true, 512, 256, 3);
    o.grad.assign(o.grad.size(), 0);
    std::fill(o.absmax1.begin(), o.absmax1.end(), 0.0f);
    std::fill(o.absmax2.begin(), o.absmax2.end(), 0.0f);
    const Result got = run_update(*be, c, o);
    for (size_t b = 0; b < 2; ++b) {
      EXPECT_EQ(got.absmax1[b], 0.0f) << bname;
      EXPECT_EQ(got.absmax2[b], 0.0f) << bname;
    }
    for (size_t i = 0; i < 512; ++i) {
      ASSERT_EQ(o.qmap1[got.codes1[i]], 0.0f) << bname << " element " << i;
      ASSERT_EQ(o.qmap2[got.codes2[i]], 0.0f) << bname << " element " << i;
    }
  }
}

TEST_F(OptimizerKernels, OverflowingBlockIsLeftUnchangedAndCounted) {
  // |g| = 1e22 is finite but (1 - beta2) g^2 overflows float32: block 1's
  // second moment would be infinite, so block 1 keeps its parameter and states.
  const Case& c = cases()[1];
  for (auto [bname, be] : backends())
    for (bool quantized : {true, false}) {
      Operands o = make_operands(c, DType::F32, quantized, 3 * 256, 256, 5);
      const float huge = 1e22f;
      std::memcpy(&o.grad[4 * (256 + 9)], &huge, 4);
      const Result got = run_update(*be, c, o);
      EXPECT_EQ(got.rejected, 1u) << bname;
      for (size_t i = 256; i < 512; ++i) {
        ASSERT_EQ(decode(got.param, DType::F32, i), decode(o.param, DType::F32, i)) << bname;
        if (quantized) {
          ASSERT_EQ(got.codes1[i], o.codes1[i]) << bname;
          ASSERT_EQ(got.codes2[i], o.codes2[i]) << bname;
        } else {
          ASSERT_EQ(got.state1[i], o.state1[i]) << bname;
        }
      }
      if (quantized) {
        EXPECT_EQ(got.absmax1[1], o.absmax1[1]) << bname;
        EXPECT_EQ(got.absmax2[1], o.absmax2[1]) << bname;
      }
      // The other blocks were updated.
      EXPECT_NE(decode(got.param, DType::F32, 0), decode(o.param, DType::F32, 0)) << bname;
    }
}

// A state that is already corrupt (a NaN absmax, as a rotted file or a bad
// cast could leave; a NaN 32-bit state) poisons only its own block: the
// block's new states would not be finite, so it keeps its parameter and
// states and is counted, and every other block steps.
TEST_F(OptimizerKernels, NanPlantedInAStateBlockStaysInThatBlock) {
  const Case& c = cases()[1];
  for (auto [bname, be] : backends())
    for (bool quantized : {true, false}) {
      Operands o = make_operands(c, DType::F32, quantized, 3 * 256, 256, 7);
      if (quantized)
        o.absmax1[1] = std::nanf("");
      else
        o.state1[256 + 40] = std::nanf("");
      const Result got = run_update(*be, c, o);
      const std::string label = bname + (quantized ? " 8-bit" : " 32-bit");
      EXPECT_EQ(got.rejected, 1u) << label;
      for (size_t i = 256; i < 512; ++i) {
        ASSERT_EQ(decode(got.param, DType::F32, i), decode(o.param, DType::F32, i)) << label;
        if (quantized) {
          ASSERT_EQ(got.codes1[i], o.codes1[i]) << label;
        } else if (i != 256 + 40) {
          ASSERT_EQ(got.state1[i], o.state1[i]) << label;
        }
      }
      if (quantized) {
        EXPECT_TRUE(std::isnan(got.absmax1[1])) << label;
      }
      for (size_t i : {size_t(0), size_t(600)})
        EXPECT_NE(decode(got.param, DType::F32, i), decode(o.param, DType::F32, i)) << label;
    }
}

TEST_F(OptimizerKernels, HalfParametersRoundTripEveryBitPattern) {
  // The kernels' own (vectorised) float16 loads and stores, over all 65536
  // patterns: with lr = 0 and no decay an AdamW step writes p * 1 + (-0) * u
  // = p back (u > 0: a positive gradient on zero states), so every finite
  // half must come back bit for bit, -0 and subnormals included. The eight
  // blocks holding inf / NaN patterns (0x7c00-0x7fff, 0xfc00-0xffff) give
  // non-finite values and are left unchanged and counted.
  Case c = cases()[1];
  c.lr = 0;
  c.wd = 0;
  for (auto [bname, be] : backends()) {
    Operands o = make_operands(c, DType::F16, true, 0x10000, 256, 13);
    for (size_t h = 0; h < 0x10000; ++h) std::memcpy(&o.param[2 * h], &h, 2);
    o.grad = encode(std::vector<float>(0x10000, 1.0f), DType::F16);
    std::fill(o.codes1.begin(), o.codes1.end(), uint8_t(127));  // the signed map's 0.0
    std::fill(o.codes2.begin(), o.codes2.end(), uint8_t(0));    // the unsigned map's 0.0
    const Result got = run_update(*be, c, o);
    EXPECT_EQ(got.rejected, 8u) << bname;
    for (size_t h = 0; h < 0x10000; ++h) {
      uint16_t back;
      std::memcpy(&back, &got.param[2 * h], 2);
      ASSERT_EQ(back, uint16_t(h)) << bname << " half pattern " << h;
    }
  }
}

// Every parameter type: 16-bit parameters are read by the norm pass's own loads.
TEST_F(OptimizerKernels, UpdateNormsMatchReference) {
  const size_t n = 4 * 256 + 100;
  for (auto [bname, be] : backends())
    for (const Case& c : cases())
      for (bool quantized : {true, false})
        for (DType type : kFloatTypes) {
          const Operands o = make_operands(c, type, quantized, n, 256, 13);
          double u_sq = 0, p_sq = 0;
          for (size_t i = 0; i < n; ++i) {
            const double p = decode(o.param, o.type, i);
            const Ref r =
                reference_step(c, p, decode(o.grad, o.type, i), o.s1(i), o.s2(i, c.two_states));
            u_sq += r.u * r.u;
            p_sq += p * p;
          }
          Uploaded u(*be, c, o);
          const auto before = u.download_all(*be, o);
          const kernels::UpdateNorms got = be->optimizer_update_norms(u.op, make_args(c));
          // Float sums of <= 256 terms per block (relative ~256 * 2^-24), u
          // itself within ~1e-6: 1e-5 relative covers both.
          const std::string label = bname + "/" + c.name + (quantized ? "/8bit/" : "/32bit/") +
                                    kernels::dtype_name(type);
          EXPECT_NEAR(got.update_sq, u_sq, 1e-5 * u_sq) << label;
          EXPECT_NEAR(got.param_sq, p_sq, 1e-5 * p_sq) << label;
          const auto after = u.download_all(*be, o);
          EXPECT_EQ(before.param, after.param) << label << ": the norm pass must not write";
          EXPECT_EQ(before.codes1, after.codes1) << label;
          EXPECT_EQ(before.state1, after.state1) << label;
        }
}

TEST_F(OptimizerKernels, GradientStatsSumsAndDetectsNonFinite) {
  const size_t n = 10000;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> g(n);
  for (auto& v : g) v = normal(rng);
  for (auto [bname, be] : backends())
    for (DType type : kFloatTypes) {
      const auto bytes = encode(g, type);
      double ref = 0;
      for (size_t i = 0; i < n; ++i) ref += decode(bytes, type, i) * decode(bytes, type, i);
      auto buf = upload(*be, bytes);
      const auto stats = be->gradient_stats(*buf, type, n, 256);
      EXPECT_TRUE(stats.finite) << bname;
      EXPECT_NEAR(stats.sum_sq, ref, 1e-5 * ref) << bname;  // float block sums, as above
    }
  // Every backend sums in the CPU's order (backend.h): the same double, here
  // over 65,793 blocks of 64 (258 chunks of 256 blocks, more than OpenCL's
  // work-group of 256 adds in one tile; a tail of 37 elements), and over
  // blocks of 128 and 256 with tails; OpenCL in both its layouts.
  std::vector<float> g2(257 * 256 * 64 + 37);
  for (auto& v : g2) v = normal(rng);
  const auto same_sums = [&](Backend& be, const std::string& bname) {
    for (DType type : kFloatTypes)
      for (const auto& shape : {std::pair<size_t, int>{g2.size(), 64}, {777, 128}, {5000, 256}}) {
        // Named copies, not structured bindings: C++17 lambdas cannot capture those.
        const size_t count = shape.first;
        const int bs = shape.second;
        const std::vector<float> part(g2.begin(), g2.begin() + std::ptrdiff_t(count));
        const auto bytes = encode(part, type);
        const auto sum = [&](Backend& on) {
          return on.gradient_stats(*upload(on, bytes), type, count, bs).sum_sq;
        };
        EXPECT_EQ(sum(be), sum(kernels::cpu_backend()))
            << bname << " " << kernels::dtype_name(type) << " n " << count << " block " << bs;
      }
  };
  const auto finds_non_finite = [&](Backend& be, const std::string& bname) {
    for (float bad : {NAN, INFINITY, -INFINITY, 1e20f}) {
      std::vector<float> x = g;
      x[4321] = bad;
      auto buf = upload(be, x);
      EXPECT_FALSE(be.gradient_stats(*buf, DType::F32, n, 256).finite) << bname << " " << bad;
      EXPECT_FALSE(be.gradient_stats(*buf, DType::F32, n, 256, false).finite) << bname << bad;
    }
  };
  for (auto [bname, be] : backends()) {
    testing::for_each_layout(*be, bname, same_sums);
    testing::for_each_layout(*be, bname, finds_non_finite);
  }
}

// Without the sum, a device backend decides from the largest |g| alone unless
// some |g| is finite but large enough that a block's float sum of squares may
// overflow; then the exact sums decide. Both sides of that line: 1e19^2 = 1e38
// is finite (FLT_MAX ~ 3.4e38), four of them in one lane (elements 16 apart)
// sum to 4e38, which overflows; 2^61 is above the device's 2^60 fast limit for
// 256-element blocks, yet its square (2^122) and 256 of them stay finite.
TEST_F(OptimizerKernels, GradientCheckWithoutTheSumDecidesAsTheSums) {
  const size_t n = 5000;
  std::vector<float> g(n, 0.5f);
  struct Case {
    std::vector<size_t> at;
    float value;
    bool finite;
  };
  const Case cases[] = {{{777}, 1e19f, true},
                        {{512, 528, 544, 560}, 1e19f, false},
                        {{3000, 3001, 3002}, std::ldexp(1.0f, 61), true},
                        {{4999}, NAN, false},
                        {{}, 0.0f, true}};
  for (const Case& c : cases) {
    std::vector<float> x = g;
    for (size_t i : c.at) x[i] = c.value;
    for (auto [bname, be] : backends()) {
      auto buf = upload(*be, x);
      const std::string label = bname + " " + std::to_string(c.value);
      EXPECT_EQ(be->gradient_stats(*buf, DType::F32, n, 256).finite, c.finite) << label;
      EXPECT_EQ(be->gradient_stats(*buf, DType::F32, n, 256, false).finite, c.finite) << label;
    }
  }
}

TEST_F(OptimizerKernels, InvalidOperandsAreRejectedWithAClearMessage) {
  Backend& be = kernels::cpu_backend();
  const Case& adam = cases()[1];
  const Operands o = make_operands(adam, DType::F32, true, 600, 256, 1);
  const auto expect_error = [&](kernels::OptimizerOperands op, const std::string& needle) {
    testing::expect_error<kernels::Error>([&] { be.optimizer_update(op, make_args(adam)); },
                                          needle);
  };
  Uploaded u(be, adam, o);
  kernels::OptimizerOperands op = u.op;
  op.state2 = nullptr;
  expect_error(op, "needs state2");
  op = u.op;
  op.rule = OptimizerRule::Lion;
  expect_error(op, "state2 must be null");
  op = u.op;
  op.blocksize = 100;
  expect_error(op, "blocksize 100");
  op = u.op;
  op.n = 601;
  expect_error(op, "buffer 'param' holds");
  op = u.op;
  op.absmax1 = nullptr;
  expect_error(op, "needs absmax1");
  op = u.op;
  op.param_type = DType::U8;
  expect_error(op, "expected float32, float16 or bfloat16");
}

}  // namespace
}  // namespace lowbit
