// The 4-bit matmul ops (gemv_4bit, gemm_4bit, gemm_4bit_input_grad) against a
// double-precision reference written here, on every backend. Weights are
// random codes and scales (not produced by the quantizer), so the decoder is
// checked independently of quantize_4bit: nibble order, rows that straddle
// blocks or start on a low nibble, double-quantized absmax, bias, float16 and
// bfloat16.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
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

using testing::expect_error;

using kernels::Backend;
using kernels::DType;
using kernels::Format4;
using testing::download;
using testing::upload;

// A random 4-bit weight in the kernels' layout, with its exact scales.
struct RandomWeight {
  size_t out, in;
  int blocksize;
  Format4 format;
  bool double_quant;
  std::vector<uint8_t> packed;
  std::vector<float> absmax;        // float scales (no double quantization)
  std::vector<uint8_t> absmax_codes;  // double quantization
  std::vector<float> nested_absmax, nested_code;
  int nested_blocksize = 256;
  float offset = 0.0f;
  std::vector<double> scale;  // per block, as the contract defines it

  // W(o, i) in double: value[code] * scale of its block.
  double at(size_t o, size_t i) const {
    const size_t f = o * in + i;
    const uint8_t p = packed[f / 2];
    const int code = (f % 2 == 0) ? (p >> 4) : (p & 15);
    return double(kernels::format4_table(format).value[code]) * scale[f / size_t(blocksize)];
  }
};

RandomWeight random_weight(size_t out, size_t in, int blocksize, Format4 format, bool dq,
                           uint32_t seed) {
  std::mt19937 rng(seed);
  RandomWeight w{out, in, blocksize, format, dq, {}, {}, {}, {}, {}, 256, 0.0f, {}};
  const size_t n = out * in;
  w.packed.resize(kernels::packed_4bit_bytes(n));
  for (auto& b : w.packed) b = uint8_t(rng());
  const size_t blocks = kernels::num_blocks(n, blocksize);
  std::uniform_real_distribution<float> positive(0.05f, 2.0f);
  if (!dq) {
    for (size_t b = 0; b < blocks; ++b) w.absmax.push_back(positive(rng));
    w.scale.assign(w.absmax.begin(), w.absmax.end());
    return w;
  }
  // Small nested blocks so that several nested scales are exercised.
  w.nested_blocksize = 64;
  const auto map = kernels::dynamic_map(true);
  w.nested_code.assign(map.begin(), map.end());
  w.offset = 0.7f;
  for (size_t b = 0; b < kernels::num_blocks(blocks, w.nested_blocksize); ++b)
    w.nested_absmax.push_back(positive(rng) * 0.3f);
  for (size_t b = 0; b < blocks; ++b) {
    w.absmax_codes.push_back(uint8_t(rng()));
    // The contract's float operations: product, then + offset.
    const float v = w.nested_code[w.absmax_codes[b]] * w.nested_absmax[b / 64];
    w.scale.push_back(double(v + w.offset));
  }
  return w;
}

// The weight's buffers on one backend.
struct DeviceWeight {
  std::unique_ptr<kernels::Buffer> packed, absmax, nested_absmax, nested_code;
  kernels::Weight4bit desc;
};

DeviceWeight to_device(Backend& be, const RandomWeight& w) {
  DeviceWeight d;
  d.packed = upload(be, w.packed);
  d.absmax = w.double_quant ? upload(be, w.absmax_codes) : upload(be, w.absmax);
  d.desc.packed = d.packed.get();
  d.desc.absmax = d.absmax.get();
  d.desc.out_features = w.out;
  d.desc.in_features = w.in;
  d.desc.blocksize = w.blocksize;
  d.desc.format = w.format;
  if (w.double_quant) {
    d.nested_absmax = upload(be, w.nested_absmax);
    d.nested_code = upload(be, w.nested_code);
    d.desc.nested_absmax = d.nested_absmax.get();
    d.desc.nested_code = d.nested_code.get();
    d.desc.nested_blocksize = w.nested_blocksize;
    d.desc.offset = w.offset;
  }
  return d;
}

// Activations stored in `type`; `value` holds exactly what is stored.
struct Activations {
  DType type;
  std::vector<double> value;
  std::vector<uint8_t> bytes;
};

Activations random_activations(size_t n, DType type, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Activations a{type, {}, std::vector<uint8_t>(n * kernels::dtype_size(type))};
  for (size_t i = 0; i < n; ++i) {
    float v = normal(rng);
    if (type == DType::BF16 || type == DType::F16) {
      const uint16_t h = type == DType::BF16 ? kernels::float_to_bf16(v) : kernels::float_to_f16(v);
      std::memcpy(&a.bytes[2 * i], &h, 2);
      v = type == DType::BF16 ? kernels::bf16_to_float(h) : kernels::f16_to_float(h);
    } else {
      std::memcpy(&a.bytes[4 * i], &v, 4);
    }
    a.value.push_back(v);
  }
  return a;
}

double stored_value(const std::vector<uint8_t>& bytes, DType type, size_t i) {
  if (type == DType::BF16 || type == DType::F16) {
    uint16_t h;
    std::memcpy(&h, &bytes[2 * i], 2);
    return type == DType::BF16 ? kernels::bf16_to_float(h) : kernels::f16_to_float(h);
  }
  float f;
  std::memcpy(&f, &bytes[4 * i], 4);
  return f;
}

// Error allowed for an output whose exact value is `ref` and whose terms sum
// to `abs_sum` in magnitude. Every path sums in float32 with at most ~300
// sequential additions per output (a 256-wide tile, then one addition per tile
// or block), so the worst-case rounding bound is ~300 u sum|t| = 1.8e-5 sum|t|
// (u = 2^-24). A wrong code or scale anywhere in a row costs at least one whole
// term of a 4096-long row, far above that. Half-precision outputs add their
// own rounding, half an ulp: 2^-9 |ref| for bfloat16 (allowed as 2^-8),
// 2^-12 |ref| for float16 (allowed as 2^-11). Where a backend rounds the
// decoded weight to the compute dtype (CUDA's tensor-core and dequantize +
// GEMM paths: see kernels/backend.h), each term carries that rounding too:
// the same bound times sum |t|.
double tolerance(double ref, double abs_sum, DType type, bool weights_rounded) {
  double tol = 2e-5 * abs_sum + 1e-30;
  const int half_bits = type == DType::BF16 ? 8 : 11;
  if (type != DType::F32) tol += std::ldexp(std::fabs(ref), -half_bits);
  if (type != DType::F32 && weights_rounded) tol += std::ldexp(abs_sum, -half_bits);
  return tol;
}

bool rounds_weights(const Backend& be) { return be.kind() == kernels::BackendKind::CUDA; }

struct Case {
  size_t m, out, in;
  int blocksize;
  Format4 format;
  bool double_quant;
  bool bias;
  DType dtype;
};

std::string label(const Case& c) {
  return "m" + std::to_string(c.m) + " W[" + std::to_string(c.out) + "x" + std::to_string(c.in) +
         "] bs" + std::to_string(c.blocksize) + " " + kernels::format4_name(c.format) +
         (c.double_quant ? " dq" : "") + (c.bias ? " bias" : "") + " " +
         kernels::dtype_name(c.dtype);
}

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      // in % 32 == 0: the vectorised gemv on CPU; blocks align with rows.
      {1, 48, 256, 64, Format4::NF4, false, false, DType::F32},
      {1, 33, 512, 64, Format4::NF4, true, true, DType::F32},
      {1, 40, 320, 256, Format4::FP4, true, true, DType::BF16},  // 256-blocks straddle rows
      // Rows of 18 and 16 whole blocks (AVX-512: block scales 16 at a time).
      {1, 40, 1152, 64, Format4::NF4, true, true, DType::F32},
      {1, 24, 2048, 128, Format4::FP4, false, false, DType::BF16},
      // Odd and non-multiple row lengths: rows start on low nibbles, blocks straddle rows.
      {1, 29, 77, 32, Format4::NF4, true, true, DType::F32},
      {1, 17, 130, 64, Format4::FP4, false, false, DType::BF16},
      {7, 29, 77, 64, Format4::NF4, true, true, DType::F32},
      {7, 300, 96, 32, Format4::FP4, true, false, DType::BF16},  // more than one output tile
      {64, 50, 100, 64, Format4::NF4, false, true, DType::F32},
      {64, 130, 600, 128, Format4::NF4, true, true, DType::BF16},  // several tiles each way
      {3, 1, 1, 32, Format4::NF4, true, true, DType::F32},  // a single weight
      {1, 64, 256, 64, Format4::NF4, true, true, DType::F16},
      {1, 21, 77, 64, Format4::NF4, true, false, DType::F16},
      {16, 96, 512, 64, Format4::NF4, true, true, DType::F16},
      {33, 70, 200, 64, Format4::FP4, false, true, DType::F16},
      // Large enough for the CUDA backend's tensor-core and dequantize + GEMM paths.
      {64, 256, 1024, 64, Format4::NF4, true, true, DType::BF16},
      // CUDA's register-decode kernel: three m-tiles, a partial last n-tile, 32-blocks (a
      // scale per lane); a deep K split over blocks.
      {48, 203, 384, 32, Format4::FP4, true, true, DType::F16},
      {2, 520, 4096, 128, Format4::NF4, true, false, DType::BF16},
      {600, 96, 320, 64, Format4::NF4, true, true, DType::F16},
      {600, 64, 256, 64, Format4::NF4, true, false, DType::F32},
      // Past the fused kernels (m > 64): CUDA dequantizes W, then cuBLAS; FP4 with a bias.
      {100, 520, 256, 64, Format4::FP4, true, true, DType::BF16},
  };
  return all;
}

// Fills an output buffer with all-ones bytes, a NaN in every element type, before a call, so
// that an output the call does not write fails the comparison instead of passing with what an
// earlier call or allocation left there.
void poison(Backend& be, kernels::Buffer& out, size_t bytes) {
  be.write(out, std::vector<uint8_t>(bytes, 0xff).data(), bytes, 0);
}

// OpenCL runs in both layouts: the GPU one overlaps the GEMM's steps
// (double-buffered tiles), the CPU one does not.
void check_forward(Backend& be, const std::string& bname) {
  for (const Case& c : cases()) {
    const std::string what = bname + " " + label(c);
    const RandomWeight w = random_weight(c.out, c.in, c.blocksize, c.format, c.double_quant, 7);
    const Activations x = random_activations(c.m * c.in, c.dtype, 11);
    const Activations bias = random_activations(c.out, c.dtype, 13);
    DeviceWeight dw = to_device(be, w);
    auto xb = upload(be, x.bytes);
    auto bb = upload(be, bias.bytes);
    const size_t y_bytes = c.m * c.out * kernels::dtype_size(c.dtype);
    auto yb = be.allocate(y_bytes);
    // gemm for every m; gemv as well for one token.
    for (bool use_gemv : {false, true}) {
      if (use_gemv && c.m != 1) continue;
      poison(be, *yb, y_bytes);
      if (use_gemv)
        be.gemv_4bit(*xb, dw.desc, c.bias ? bb.get() : nullptr, *yb, c.dtype);
      else
        be.gemm_4bit(*xb, c.m, dw.desc, c.bias ? bb.get() : nullptr, *yb, c.dtype);
      const auto y = download<uint8_t>(be, *yb, y_bytes);
      for (size_t r = 0; r < c.m; ++r)
        for (size_t o = 0; o < c.out; ++o) {
          double ref = c.bias ? bias.value[o] : 0.0, abs_sum = std::fabs(ref);
          for (size_t i = 0; i < c.in; ++i) {
            const double t = w.at(o, i) * x.value[r * c.in + i];
            ref += t;
            abs_sum += std::fabs(t);
          }
          const double got = stored_value(y, c.dtype, r * c.out + o);
          ASSERT_NEAR(got, ref, tolerance(ref, abs_sum, c.dtype, rounds_weights(be)))
              << what << (use_gemv ? " gemv" : " gemm") << " y[" << r << ", " << o << "]";
        }
    }
  }
}

TEST(Matmul4bit, ForwardMatchesDoubleReference) {
  std::shared_ptr<Backend> holder;
  for (const auto& named : testing::test_backends(holder))
    testing::for_each_layout(*named.second, named.first, check_forward);
}

void check_input_grad(Backend& be, const std::string& bname) {
  for (const Case& c : cases()) {
    const std::string what = bname + " " + label(c);
    const RandomWeight w = random_weight(c.out, c.in, c.blocksize, c.format, c.double_quant, 17);
    const Activations dy = random_activations(c.m * c.out, c.dtype, 19);
    DeviceWeight dw = to_device(be, w);
    auto dyb = upload(be, dy.bytes);
    const size_t dx_bytes = c.m * c.in * kernels::dtype_size(c.dtype);
    auto dxb = be.allocate(dx_bytes);
    poison(be, *dxb, dx_bytes);
    be.gemm_4bit_input_grad(*dyb, c.m, dw.desc, *dxb, c.dtype);
    const auto dx = download<uint8_t>(be, *dxb, dx_bytes);
    for (size_t r = 0; r < c.m; ++r)
      for (size_t i = 0; i < c.in; ++i) {
        double ref = 0.0, abs_sum = 0.0;
        for (size_t o = 0; o < c.out; ++o) {
          const double t = dy.value[r * c.out + o] * w.at(o, i);
          ref += t;
          abs_sum += std::fabs(t);
        }
        ASSERT_NEAR(stored_value(dx, c.dtype, r * c.in + i), ref,
                    tolerance(ref, abs_sum, c.dtype, rounds_weights(be)))
            << what << " dx[" << r << ", " << i << "]";
      }
  }
}

TEST(Matmul4bit, InputGradientMatchesDoubleReference) {
  std::shared_ptr<Backend> holder;
  for (const auto& named : testing::test_backends(holder))
    testing::for_each_layout(*named.second, named.first, check_input_grad);
}

#ifdef LOWBIT_WITH_OPENCL
// OpenCL's tiled GEMM indexes in 32 bits wherever the call's activations and weight allow it,
// so the cases above never reach its 64-bit form, which tensors of 2^31 elements and more
// take: the same checks on a backend that keeps 64-bit indices.
TEST(Matmul4bit, OpenClWithSixtyFourBitIndicesMatchesDoubleReference) {
  LOWBIT_REQUIRE_OPENCL(cl);
  const auto wide = testing::opencl_with_wide_indices(*cl);
  testing::for_each_layout(*wide, "opencl, 64-bit indices", check_forward);
  testing::for_each_layout(*wide, "opencl, 64-bit indices", check_input_grad);
}
#endif

// The CPU has two gemv paths; the cases above must reach both where the
// machine has the vector one.
TEST(Matmul4bit, CasesCoverBothCpuGemvPaths) {
  bool vectorised = false, tiled = false;
  for (const Case& c : cases()) {
    if (c.m != 1) continue;
    (kernels::cpu::active_kernels().gemv_4bit_vectorised(c.in) ? vectorised : tiled) = true;
  }
  EXPECT_TRUE(tiled);
  if (kernels::cpu_isa() != kernels::CpuIsa::Generic) {
    EXPECT_TRUE(vectorised);
  }
}

// gemv_4bit_int8 against the double reference, within the bound
// kernels/backend.h states for it: per block, with s the block's scale, u =
// max |value| / 127 and s_x = max |x| / 127 over the block,
//   |s| * (u / 2 * sum |x| + max |value| * (1 + 1 / 254) * s_x / 2 * blocksize),
// plus the float rounding and output rounding `tolerance` allows the exact
// path. The cases cover the vector loop (blocks of 64 and more), the scalar
// one (blocks of 32), double quantization, both formats, bias, the three
// dtypes, and rows that do not hold whole blocks (which run gemv_4bit).
// That bound is the worst case, loose enough to hide one block with a wrong
// scale, so the error is also held to 6 standard deviations of what the
// rounding gives on random data: a product w x with x's code off by up to
// s_x / 2 and w's by up to |s| u / 2 (uniform, independent) errs with variance
// (w^2 s_x^2 + x^2 s^2 u^2) / 12; the row's variance is the sum over its
// products, plus the output's own rounding.
struct Int8Case {
  size_t out, in;
  int blocksize;
  Format4 format;
  bool double_quant;
  bool bias;
  DType dtype;
};

const std::vector<Int8Case>& int8_cases() {
  static const std::vector<Int8Case> all = {
      {96, 512, 64, Format4::NF4, true, true, DType::F32},
      {70, 1024, 128, Format4::FP4, false, false, DType::BF16},
      {33, 256, 32, Format4::NF4, false, true, DType::F16},
      {17, 4096, 4096, Format4::NF4, true, false, DType::F32},
      {29, 77, 64, Format4::NF4, true, true, DType::F32},  // blocks straddle rows
      {24, 320, 64, Format4::NF4, true, false, DType::F32},  // AVX-512: 5 blocks, 256-bit loop
      // Block scales taken 8 (AVX2) or 16 (AVX-512) at a time: groups that
      // straddle a nested block, and rows that end inside a group.
      {40, 704, 64, Format4::FP4, true, true, DType::F32},
      {40, 1152, 64, Format4::NF4, true, false, DType::BF16},
      {20, 1152, 64, Format4::NF4, false, true, DType::F32},
  };
  return all;
}

kernels::cpu::Weight4bitView host_view(const RandomWeight& w) {
  kernels::cpu::Weight4bitView v{};
  v.packed = w.packed.data();
  if (w.double_quant) {
    v.absmax_codes = w.absmax_codes.data();
    v.nested_absmax = w.nested_absmax.data();
    v.nested_code = w.nested_code.data();
    v.nested_shift = int(std::log2(double(w.nested_blocksize)));
    v.offset = w.offset;
  } else {
    v.absmax = w.absmax.data();
  }
  v.out_features = w.out;
  v.in_features = w.in;
  v.block_shift = int(std::log2(double(w.blocksize)));
  v.value = kernels::format4_table(w.format).value.data();
  return v;
}

// Checks y (stored in c.dtype) against the bound; returns the largest error
// relative to the output's terms, sum |t|.
double check_int8_output(const Int8Case& c, const RandomWeight& w, const Activations& x,
                         const Activations& bias, const std::vector<uint8_t>& y,
                         const std::string& what) {
  const auto& value = kernels::format4_table(c.format).value;
  double vmax = 0;
  for (float v : value) vmax = std::max(vmax, std::fabs(double(v)));
  const double u = vmax / 127.0;
  double worst = 0;
  for (size_t o = 0; o < c.out; ++o) {
    double ref = c.bias ? bias.value[o] : 0.0, abs_sum = std::fabs(ref), bound = 0, var = 0;
    for (size_t b0 = 0; b0 < c.in; b0 += size_t(c.blocksize)) {
      const size_t b1 = std::min(c.in, b0 + size_t(c.blocksize));
      double xsum = 0, xmax = 0;
      for (size_t i = b0; i < b1; ++i) {
        const double t = w.at(o, i) * x.value[i];
        ref += t;
        abs_sum += std::fabs(t);
        xsum += std::fabs(x.value[i]);
        xmax = std::max(xmax, std::fabs(x.value[i]));
      }
      const double s = std::fabs(w.scale[(o * c.in + b0) / size_t(c.blocksize)]);
      bound += s * (u / 2 * xsum + vmax * (1 + 1.0 / 254) * xmax / 127 / 2 * c.blocksize);
      const double sx = xmax / 127;
      for (size_t i = b0; i < b1; ++i)
        var += (w.at(o, i) * w.at(o, i) * sx * sx + x.value[i] * x.value[i] * s * s * u * u) / 12;
    }
    const double got = stored_value(y, c.dtype, o);
    const double rounding = tolerance(ref, abs_sum, c.dtype, false);
    EXPECT_NEAR(got, ref, bound + rounding) << what << " y[" << o << "]";
    EXPECT_NEAR(got, ref, 6 * std::sqrt(var) + rounding) << what << " y[" << o << "], 6 sigma";
    worst = std::max(worst, std::fabs(got - ref) / abs_sum);
  }
  return worst;
}

TEST(Matmul4bit, Int8GemvStaysWithinItsBound) {
  std::shared_ptr<Backend> holder;
  for (const Int8Case& c : int8_cases()) {
    const std::string what = "W[" + std::to_string(c.out) + "x" + std::to_string(c.in) + "] bs" +
                             std::to_string(c.blocksize) + " " + kernels::format4_name(c.format) +
                             " " + kernels::dtype_name(c.dtype);
    const RandomWeight w = random_weight(c.out, c.in, c.blocksize, c.format, c.double_quant, 23);
    const Activations x = random_activations(c.in, c.dtype, 29);
    const Activations bias = random_activations(c.out, c.dtype, 31);
    const size_t y_bytes = c.out * kernels::dtype_size(c.dtype);
    // Through each backend (OpenCL and CUDA run gemv_4bit: the bound holds too).
    for (const auto& [name, be] : testing::test_backends(holder)) {
      DeviceWeight dw = to_device(*be, w);
      auto xb = upload(*be, x.bytes);
      auto bb = upload(*be, bias.bytes);
      auto yb = be->allocate(y_bytes);
      be->gemv_4bit_int8(*xb, dw.desc, c.bias ? bb.get() : nullptr, *yb, c.dtype);
      check_int8_output(c, w, x, bias, download<uint8_t>(*be, *yb, y_bytes), name + " " + what);
    }
    // Every CPU path, which must also differ from the exact gemv where it has
    // the int8 loop (x86 vectors, rows of whole blocks of 64 values or a
    // multiple) and equal it elsewhere.
    const kernels::cpu::Weight4bitView view = host_view(w);
    for (kernels::CpuIsa isa : kernels::cpu_isas()) {
      const auto& path = kernels::cpu::isa_kernels(isa);
      std::vector<uint8_t> y(y_bytes), exact(y_bytes);
      const void* b = c.bias ? bias.bytes.data() : nullptr;
      path.gemv_4bit_int8(x.bytes.data(), view, b, y.data(), c.dtype);
      path.gemv_4bit(x.bytes.data(), view, b, exact.data(), c.dtype);
      const std::string where = std::string(kernels::cpu_isa_name(isa)) + " " + what;
      const double worst = check_int8_output(c, w, x, bias, y, where);
      std::printf("%s: largest error %.2e of sum |w x|\n", where.c_str(), worst);
      const bool int8_loop = (isa == kernels::CpuIsa::Avx2 || isa == kernels::CpuIsa::Avx512) &&
                             c.blocksize % 64 == 0 && c.in % size_t(c.blocksize) == 0;
      EXPECT_EQ(y == exact, !int8_loop) << where;
    }
  }
}

// A block of x holding NaN or inf makes every row NaN on the int8 loop (each
// row reads every block of x); the exact gemv that the other paths run gives
// inf or NaN.
TEST(Matmul4bit, Int8GemvPropagatesNonFiniteActivations) {
  const RandomWeight w = random_weight(8, 256, 64, Format4::NF4, false, 37);
  const kernels::cpu::Weight4bitView view = host_view(w);
  for (float bad : {std::nanf(""), INFINITY}) {
    std::vector<float> x(256, 0.5f), y(8);
    x[70] = bad;
    for (kernels::CpuIsa isa : kernels::cpu_isas()) {
      kernels::cpu::isa_kernels(isa).gemv_4bit_int8(x.data(), view, nullptr, y.data(), DType::F32);
      const bool int8_loop = isa == kernels::CpuIsa::Avx2 || isa == kernels::CpuIsa::Avx512;
      for (float v : y)
        EXPECT_TRUE(int8_loop ? std::isnan(v) : !std::isfinite(v))
            << kernels::cpu_isa_name(isa) << " x has " << bad;
    }
  }
}

TEST(Matmul4bit, BadArgumentsAreRefused) {
  std::shared_ptr<Backend> holder;
  for (const auto& named : testing::test_backends(holder)) {
    // Lambdas below capture it: a structured binding cannot be captured
    // before C++20 (clang refuses; the sanitizer build uses clang).
    auto* be = named.second;
    const RandomWeight w = random_weight(8, 64, 64, Format4::NF4, true, 3);
    DeviceWeight dw = to_device(*be, w);
    auto x = be->allocate(4 * 64 * 4);
    auto y = be->allocate(4 * 8 * 4);
    expect_error([&] { be->gemm_4bit(*x, 4, dw.desc, nullptr, *y, DType::U8); },
                 "compute dtype uint8 is not supported");
    expect_error([&] { be->gemm_4bit(*x, 5, dw.desc, nullptr, *y, DType::F32); },
                 "buffer 'x' holds 1024 bytes");
    kernels::Weight4bit bad = dw.desc;
    bad.in_features = 128;  // the packed codes hold only 8 x 64
    expect_error([&] { be->gemv_4bit(*x, bad, nullptr, *y, DType::F32); }, "buffer 'packed'");
    bad = dw.desc;
    bad.nested_code = nullptr;
    expect_error([&] { be->gemm_4bit_input_grad(*y, 4, bad, *x, DType::F32); },
                 "needs both 'nested_absmax' and 'nested_code'");
    bad = dw.desc;
    bad.blocksize = 48;
    expect_error([&] { be->gemm_4bit(*x, 4, bad, nullptr, *y, DType::F32); },
                 "blocksize 48 is not supported");
    bad = dw.desc;
    bad.out_features = 0;
    expect_error([&] { be->gemm_4bit(*x, 4, bad, nullptr, *y, DType::F32); }, "is empty");
    auto small_bias = be->allocate(7 * 4);
    expect_error([&] { be->gemm_4bit(*x, 4, dw.desc, small_bias.get(), *y, DType::F32); },
                 "buffer 'bias' holds 28 bytes");
  }
}

}  // namespace
}  // namespace lowbit
