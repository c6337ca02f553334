// Test support for the optimizer kernels: the hyper-parameter cases, a
// double-precision reference of each rule (Adam and RMSprop as torch documents
// them, LAMB and Lion as their papers), and host-side operands run through any
// backend.
#pragma once

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "tests/kernels/backends.h"

namespace lowbit::testing {

using kernels::Backend;
using kernels::DType;
using kernels::OptimizerRule;

inline constexpr DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16};

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

inline const std::vector<Case>& cases() {
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

inline constexpr double kGnormScale = 0.75;  // exercises the percentile clipping factor

// The kernel's arguments for a case, as optimizer_rules.h documents them.
inline kernels::OptimizerArgs make_args(const Case& c) {
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

inline Ref reference_step(const Case& c, double p, double g, double s1, double s2) {
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

inline std::vector<float> dynamic_map(bool is_signed) {
  const auto m = kernels::dynamic_map(is_signed);
  return {m.begin(), m.end()};
}

// state1 is signed except RMSprop's square average; state2 is Adam's
// (non-negative) second moment, or RMSprop's (signed) momentum buffer.
inline bool state1_signed(const Case& c) { return c.rule != OptimizerRule::RMSprop; }
inline bool state2_signed(const Case& c) { return c.rule == OptimizerRule::RMSprop; }

inline double decode(const std::vector<uint8_t>& bytes, DType t, size_t i) {
  if (t == DType::F32) {
    float f;
    std::memcpy(&f, &bytes[4 * i], 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, &bytes[2 * i], 2);
  return t == DType::BF16 ? kernels::bf16_to_float(h) : kernels::f16_to_float(h);
}

inline std::vector<uint8_t> encode(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> out(v.size() * kernels::dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(&out[4 * i], &v[i], 4);
    } else {
      const uint16_t h =
          t == DType::BF16 ? kernels::float_to_bf16(v[i]) : kernels::float_to_f16(v[i]);
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
  std::vector<uint8_t> codes1, codes2;  // 8-bit
  std::vector<float> absmax1, absmax2;  // 8-bit
  std::vector<float> state1, state2;    // 32-bit
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

inline Operands make_operands(const Case& c, DType type, bool quantized, size_t n, int blocksize,
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

inline Result run_update(Backend& be, const Case& c, const Operands& o) {
  Uploaded u(be, c, o);
  const size_t rejected = be.optimizer_update(u.op, make_args(c));
  Result r = u.download_all(be, o);
  r.rejected = rejected;
  return r;
}

}  // namespace lowbit::testing
