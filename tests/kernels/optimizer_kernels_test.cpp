// The optimizer ops of the kernels contract: one step of every rule against a
// double-precision reference of the published formulas written here (Adam and
// RMSprop as torch documents them, LAMB and Lion as their papers), with 8-bit
// and 32-bit states and every parameter dtype; CPU and OpenCL bit for bit; the
// non-finite guard; the norm and gradient sums; operand validation.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/backend.h"
#include "tests/kernels/backends.h"

namespace lowbit {
namespace {

using kernels::Backend;
using kernels::DType;
using kernels::OptimizerRule;
using testing::download;
using testing::upload;

constexpr DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16};

// ---------------------------------------------------------------------------
// Hyper-parameters and the double-precision reference.

struct Case {
  std::string name;
  OptimizerRule rule;
  bool two_states;
  double lr, beta1, beta2, eps, wd;
  bool decoupled;  // Adam: AdamW's decoupled decay instead of torch Adam's L2
  int t;           // step number (bias corrections)
  double trust;    // LAMB: the trust ratio the host would apply
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"adam_l2", OptimizerRule::Adam, true, 1e-3, 0.9, 0.999, 1e-8, 0.1, false, 3, 1},
      {"adamw", OptimizerRule::Adam, true, 1e-3, 0.9, 0.999, 1e-8, 0.01, true, 7, 1},
      {"lamb", OptimizerRule::LAMB, true, 1e-2, 0.9, 0.999, 1e-6, 0.01, false, 5, 0.7},
      {"lion", OptimizerRule::Lion, false, 1e-4, 0.9, 0.99, 0, 0.1, true, 1, 1},
      {"rmsprop", OptimizerRule::RMSprop, false, 1e-2, 0.99, 0, 1e-8, 0.05, false, 2, 1},
      {"rmsprop_momentum", OptimizerRule::RMSprop, true, 1e-2, 0.99, 0.9, 1e-8, 0, false, 2, 1},
  };
  return all;
}

constexpr double kGnormScale = 0.75;  // exercises the percentile clipping factor

// The kernel's arguments for a case, as optimizer_rules.h documents them.
kernels::OptimizerArgs make_args(const Case& c) {
  kernels::OptimizerArgs a{};
  const double c1 = 1 - std::pow(c.beta1, c.t), c2 = 1 - std::pow(c.beta2, c.t);
  a.beta1 = float(c.beta1);
  a.one_minus_beta1 = float(1 - c.beta1);
  a.beta2 = float(c.beta2);
  a.one_minus_beta2 = float(1 - c.beta2);
  a.eps = float(c.eps);
  a.l2 = c.decoupled ? 0.0f : float(c.wd);
  a.decay = c.decoupled ? float(1 - c.lr * c.wd) : 1.0f;
  a.lr_step = float(-c.lr);
  a.gnorm_scale = float(kGnormScale);
  if (c.rule == OptimizerRule::Adam || c.rule == OptimizerRule::LAMB)
    a.eps = float(c.eps * std::sqrt(c2));
  if (c.rule == OptimizerRule::Adam) a.lr_step = float(-c.lr * std::sqrt(c2) / c1);
  if (c.rule == OptimizerRule::LAMB) {
    a.m_scale = float(std::sqrt(c2) / c1);
    a.lr_step = float(-c.lr * c.trust);
  }
  return a;
}

struct Ref {
  double p, s1, s2;
  double u;  // the kernel's direction (see optimizer_rules.h), for the norm sums
};

Ref reference_step(const Case& c, double p, double g, double s1, double s2) {
  g *= kGnormScale;
  const double c1 = 1 - std::pow(c.beta1, c.t), c2 = 1 - std::pow(c.beta2, c.t);
  Ref r{p, s1, s2, 0};
  switch (c.rule) {
    case OptimizerRule::Adam: {
      if (!c.decoupled) g += c.wd * p;
      r.s1 = c.beta1 * s1 + (1 - c.beta1) * g;
      r.s2 = c.beta2 * s2 + (1 - c.beta2) * g * g;
      const double step = (r.s1 / c1) / (std::sqrt(r.s2 / c2) + c.eps);
      r.p = (c.decoupled ? p * (1 - c.lr * c.wd) : p) - c.lr * step;
      r.u = step * c1 / std::sqrt(c2);
      break;
    }
    case OptimizerRule::LAMB:
      r.s1 = c.beta1 * s1 + (1 - c.beta1) * g;
      r.s2 = c.beta2 * s2 + (1 - c.beta2) * g * g;
      r.u = (r.s1 / c1) / (std::sqrt(r.s2 / c2) + c.eps) + c.wd * p;
      r.p = p - c.lr * c.trust * r.u;
      break;
    case OptimizerRule::Lion: {
      const double mix = c.beta1 * s1 + (1 - c.beta1) * g;
      r.u = mix > 0 ? 1 : (mix < 0 ? -1 : 0);
      r.p = p * (1 - c.lr * c.wd) - c.lr * r.u;
      r.s1 = c.beta2 * s1 + (1 - c.beta2) * g;
      break;
    }
    case OptimizerRule::RMSprop: {
      g += c.wd * p;
      r.s1 = c.beta1 * s1 + (1 - c.beta1) * g * g;
      const double scaled = g / (std::sqrt(r.s1) + c.eps);
      r.s2 = c.two_states ? c.beta2 * s2 + scaled : 0;
      r.u = c.two_states ? r.s2 : scaled;
      r.p = p - c.lr * r.u;
      break;
    }
  }
  return r;
}

// ---------------------------------------------------------------------------
// Operands on the host.

std::vector<float> dynamic_map(bool is_signed) {
  const auto m = kernels::dynamic_map(is_signed);
  return {m.begin(), m.end()};
}

// state1 is signed except RMSprop's square average; state2 is Adam's
// (non-negative) second moment, or RMSprop's (signed) momentum buffer.
bool state1_signed(const Case& c) { return c.rule != OptimizerRule::RMSprop; }
bool state2_signed(const Case& c) { return c.rule == OptimizerRule::RMSprop; }

double decode(const std::vector<uint8_t>& bytes, DType t, size_t i) {
  if (t == DType::F32) {
    float f;
    std::memcpy(&f, &bytes[4 * i], 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, &bytes[2 * i], 2);
  return t == DType::BF16 ? kernels::bf16_to_float(h) : kernels::f16_to_float(h);
}

std::vector<uint8_t> encode(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> out(v.size() * kernels::dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(&out[4 * i], &v[i], 4);
    } else {
      const uint16_t h = t == DType::BF16 ? kernels::float_to_bf16(v[i]) : kernels::float_to_f16(v[i]);
      std::memcpy(&out[2 * i], &h, 2);
    }
  }
  return out;
}

struct Operands {
  DType type = DType::F32;
  bool quantized = true;
  int blocksize = 256;
  std::vector<uint8_t> param, grad;
  std::vector<uint8_t> codes1, codes2;     // 8-bit
  std::vector<float> absmax1, absmax2;     // 8-bit
  std::vector<float> state1, state2;       // 32-bit
  std::vector<float> qmap1, qmap2;
  size_t n() const { return param.size() / kernels::dtype_size(type); }

  // The old state values the kernel starts from.
  double s1(size_t i) const {
    return quantized ? double(qmap1[codes1[i]]) * absmax1[i / size_t(blocksize)] : state1[i];
  }
  double s2(size_t i, bool two) const {
    if (!two) return 0;
    return quantized ? double(qmap2[codes2[i]]) * absmax2[i / size_t(blocksize)] : state2[i];
  }
};

Operands make_operands(const Case& c, DType type, bool quantized, size_t n, int blocksize,
                       unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> code(0, 255);
  Operands o;
  o.type = type;
  o.quantized = quantized;
  o.blocksize = blocksize;
  std::vector<float> p(n), g(n);
  for (auto& v : p) v = 0.1f * normal(rng);
  for (auto& v : g) v = 0.01f * normal(rng);
  o.param = encode(p, type);
  o.grad = encode(g, type);
  o.qmap1 = dynamic_map(state1_signed(c));
  o.qmap2 = dynamic_map(state2_signed(c));
  const size_t nb = kernels::num_blocks(n, blocksize);
  const auto fill_state = [&](bool is_signed, double scale, std::vector<uint8_t>& codes,
                              std::vector<float>& absmax, std::vector<float>& values) {
    if (quantized) {
      codes.resize(n);
      for (auto& v : codes) v = uint8_t(code(rng));
      absmax.resize(nb);
      for (auto& v : absmax) v = float(scale * (0.5 + std::fabs(normal(rng))));
    } else {
      values.resize(n);
      for (auto& v : values) v = float(scale * (is_signed ? normal(rng) : std::fabs(normal(rng))));
    }
  };
  // Magnitudes of a trained run: m ~ |g|, v ~ g^2, RMSprop's square average ~ g^2.
  fill_state(state1_signed(c), state1_signed(c) ? 0.01 : 1e-4, o.codes1, o.absmax1, o.state1);
  if (c.two_states)
    fill_state(state2_signed(c), state2_signed(c) ? 0.01 : 1e-4, o.codes2, o.absmax2, o.state2);
  return o;
}

struct Result {
  std::vector<uint8_t> param, codes1, codes2;
  std::vector<float> absmax1, absmax2, state1, state2;
  size_t rejected = 0;
};

// Device buffers of one set of operands, and the OptimizerOperands over them.
struct Uploaded {
  std::unique_ptr<kernels::Buffer> param, grad, s1, a1, q1, s2, a2, q2;
  kernels::OptimizerOperands op;

  Uploaded(Backend& be, const Case& c, const Operands& o) {
    param = upload(be, o.param);
    grad = upload(be, o.grad);
    q1 = upload(be, o.qmap1);
    q2 = upload(be, o.qmap2);
    if (o.quantized) {
      s1 = upload(be, o.codes1);
      a1 = upload(be, o.absmax1);
      if (c.two_states) {
        s2 = upload(be, o.codes2);
        a2 = upload(be, o.absmax2);
      }
    } else {
      s1 = upload(be, o.state1);
      if (c.two_states) s2 = upload(be, o.state2);
    }
    op.rule = c.rule;
    op.n = o.n();
    op.param = param.get();
    op.param_type = o.type;
    op.grad = grad.get();
    op.quantized = o.quantized;
    op.blocksize = o.blocksize;
    op.state1 = s1.get();
    op.absmax1 = a1.get();
    op.qmap1 = q1.get();
    op.state2 = s2.get();
    op.absmax2 = a2.get();
    op.qmap2 = q2.get();
  }

  Result download_all(Backend& be, const Operands& o) const {
    Result r;
    const size_t n = o.n(), nb = kernels::num_blocks(n, o.blocksize);
    r.param = download<uint8_t>(be, *param, o.param.size());
    if (o.quantized) {
      r.codes1 = download<uint8_t>(be, *s1, n);
      r.absmax1 = download<float>(be, *a1, nb);
      if (s2) r.codes2 = download<uint8_t>(be, *s2, n);
      if (s2) r.absmax2 = download<float>(be, *a2, nb);
    } else {
      r.state1 = download<float>(be, *s1, n);
      if (s2) r.state2 = download<float>(be, *s2, n);
    }
    return r;
  }
};

Result run_update(Backend& be, const Case& c, const Operands& o) {
  Uploaded u(be, c, o);
  const size_t rejected = be.optimizer_update(u.op, make_args(c));
  Result r = u.download_all(be, o);
  r.rejected = rejected;
  return r;
}

// The kernel's code for r is nearest (ties within float rounding of r allowed).
::testing::AssertionResult is_nearest_code(const std::vector<float>& qmap, double r, int code) {
  const double d = std::fabs(qmap[size_t(code)] - r);
  for (int k : {code - 1, code + 1}) {
    if (k < 0 || k > 255) continue;
    // 1e-6: r itself carries the float rounding of the state and the division.
    if (std::fabs(qmap[size_t(k)] - r) + 1e-6 < d)
      return ::testing::AssertionFailure() << "r=" << r << " got code " << code << " ("
                                           << qmap[size_t(code)] << "), code " << k << " ("
                                           << qmap[size_t(k)] << ") is nearer";
  }
  return ::testing::AssertionSuccess();
}

// Checks one state against the reference values `ref` (per element).
void expect_state(const Operands& o, const std::vector<float>& qmap, const std::vector<uint8_t>& codes,
                  const std::vector<float>& absmax, const std::vector<float>& values,
                  const std::vector<double>& ref, const std::string& label) {
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

class OptimizerKernels : public ::testing::Test {
 protected:
  std::vector<std::pair<std::string, Backend*>> backends() {
    std::vector<std::pair<std::string, Backend*>> out = {{"cpu", &kernels::cpu_backend()}};
    opencl_ = testing::opencl_or_null();
    if (opencl_) out.push_back({"opencl", opencl_.get()});
    return out;
  }
  std::shared_ptr<Backend> opencl_;
};

TEST_F(OptimizerKernels, EveryRuleMatchesDoubleReference) {
  const size_t n = 3 * 256 + 77;  // a short tail block
  for (auto [bname, be] : backends())
    for (const Case& c : cases())
      for (bool quantized : {true, false})
        for (DType type : kFloatTypes) {
          const std::string label = bname + "/" + c.name + (quantized ? "/8bit/" : "/32bit/") +
                                    kernels::dtype_name(type);
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

TEST_F(OptimizerKernels, CpuAndOpenClAgreeBitForBit) {
  LOWBIT_REQUIRE_OPENCL(ocl);
  const size_t n = 5 * 256 + 31;
  for (const Case& c : cases())
    for (bool quantized : {true, false})
      for (DType type : kFloatTypes) {
        const std::string label =
            c.name + (quantized ? "/8bit/" : "/32bit/") + kernels::dtype_name(type);
        const Operands o = make_operands(c, type, quantized, n, 256, 11);
        const Result a = run_update(kernels::cpu_backend(), c, o);
        const Result b = run_update(*ocl, c, o);
        // Both backends evaluate the shared rules with correctly rounded
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

TEST_F(OptimizerKernels, UpdateNormsMatchReference) {
  const size_t n = 4 * 256 + 100;
  for (auto [bname, be] : backends())
    for (const Case& c : cases())
      for (bool quantized : {true, false}) {
        const Operands o = make_operands(c, DType::F32, quantized, n, 256, 13);
        double u_sq = 0, p_sq = 0;
        for (size_t i = 0; i < n; ++i) {
          const double p = decode(o.param, o.type, i);
          const Ref r = reference_step(c, p, decode(o.grad, o.type, i), o.s1(i), o.s2(i, c.two_states));
          u_sq += r.u * r.u;
          p_sq += p * p;
        }
        Uploaded u(*be, c, o);
        const auto before = u.download_all(*be, o);
        const kernels::UpdateNorms got = be->optimizer_update_norms(u.op, make_args(c));
        // Float sums of <= 256 terms per block (relative ~256 * 2^-24), u
        // itself within ~1e-6: 1e-5 relative covers both.
        const std::string label = bname + "/" + c.name + (quantized ? "/8bit" : "/32bit");
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
  for (auto [bname, be] : backends())
    for (float bad : {NAN, INFINITY, -INFINITY, 1e20f}) {
      std::vector<float> x = g;
      x[4321] = bad;
      auto buf = upload(*be, x);
      EXPECT_FALSE(be->gradient_stats(*buf, DType::F32, n, 256).finite) << bname << " " << bad;
    }
}

TEST_F(OptimizerKernels, InvalidOperandsAreRejectedWithAClearMessage) {
  Backend& be = kernels::cpu_backend();
  const Case& adam = cases()[1];
  const Operands o = make_operands(adam, DType::F32, true, 600, 256, 1);
  const auto expect_error = [&](kernels::OptimizerOperands op, const std::string& needle) {
    try {
      be.optimizer_update(op, make_args(adam));
      ADD_FAILURE() << "no error for " << needle;
    } catch (const kernels::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
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
