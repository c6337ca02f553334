// The kernels contract, op by op: codes and absmax against a scalar
// double-precision reference written here (nearest-code search), dequantized
// values against exact products, and CPU vs OpenCL bit for bit.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "kernels/backend.h"
#include "tests/kernels/backends.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using kernels::Backend;
using kernels::DType;
using kernels::Format4;
using testing::download;
using testing::upload;

// ---------------------------------------------------------------------------
// Independent reference conversions (frexp/ldexp arithmetic, not bit tricks).

// Rounds v to `bits` significant bits, nearest-even, with IEEE subnormals
// below 2^min_exp and overflow to inf at max_finite's next binade rounding.
double round_to_format(double v, int bits, int min_exp, double max_finite) {
  if (v == 0.0 || !std::isfinite(v)) return v;
  int e = 0;
  std::frexp(v, &e);                 // |v| in [2^(e-1), 2^e)
  const int exp = std::max(e, min_exp + 1);  // subnormals share the minimum exponent
  const double ulp = std::ldexp(1.0, exp - bits);
  const double r = std::nearbyint(v / ulp) * ulp;  // default rounding mode: nearest-even
  if (std::fabs(r) > max_finite) return std::copysign(INFINITY, v);
  return r;
}
double ref_bf16(double v) { return round_to_format(v, 8, -126, 3.3895313892515355e38); }
double ref_f16(double v) { return round_to_format(v, 11, -14, 65504.0); }

// Element storage for a test input: values are chosen as doubles, rounded to
// the dtype by the reference rules above, and stored with the library's
// encoders (whose bit patterns are then checked against the reference).
struct Input {
  DType type;
  std::vector<double> value;  // exactly representable in `type`
  std::vector<uint8_t> bytes;
};

Input make_input(DType type, const std::vector<double>& raw) {
  Input in{type, {}, {}};
  in.bytes.resize(raw.size() * kernels::dtype_size(type));
  for (size_t i = 0; i < raw.size(); ++i) {
    double v = double(float(raw[i]));
    if (type == DType::BF16) v = ref_bf16(v);
    if (type == DType::F16) v = ref_f16(v);
    in.value.push_back(v);
    if (type == DType::F32) {
      const float f = float(v);
      std::memcpy(&in.bytes[i * 4], &f, 4);
    } else {
      const uint16_t h = type == DType::BF16 ? kernels::float_to_bf16(float(v))
                                             : kernels::float_to_f16(float(v));
      std::memcpy(&in.bytes[i * 2], &h, 2);
      const float back = type == DType::BF16 ? kernels::bf16_to_float(h) : kernels::f16_to_float(h);
      EXPECT_EQ(double(back), v) << "storage encoder disagrees with the reference at " << i;
    }
  }
  return in;
}

// Decodes one output element of `type` to double.
double out_value(const std::vector<uint8_t>& bytes, DType type, size_t i) {
  if (type == DType::F32) {
    float f;
    std::memcpy(&f, &bytes[i * 4], 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, &bytes[i * 2], 2);
  return type == DType::BF16 ? kernels::bf16_to_float(h) : kernels::f16_to_float(h);
}

// Rounds an exact float32 result to the output type, as the reference does.
double ref_store(double v, DType type) {
  v = double(float(v));
  if (type == DType::BF16) return ref_bf16(v);
  if (type == DType::F16) return ref_f16(v);
  return v;
}

// ---------------------------------------------------------------------------
// Reference quantizers.

// Per element: the block's absmax (exact max |x|), r = x / absmax in double
// (0 in an all-zero block) and the reference code.
struct Ref {
  std::vector<double> absmax;
  std::vector<double> r;
  std::vector<int> code;
};

// Fills absmax and r; `nearest(r, zero_block)` chooses each code.
template <typename Nearest>
Ref ref_blockwise(const std::vector<double>& x, int bs, Nearest nearest) {
  Ref ref;
  for (size_t b0 = 0; b0 < x.size(); b0 += size_t(bs)) {
    const size_t b1 = std::min(x.size(), b0 + size_t(bs));
    double m = 0;
    for (size_t i = b0; i < b1; ++i) m = std::max(m, std::fabs(x[i]));
    ref.absmax.push_back(m);
    for (size_t i = b0; i < b1; ++i) {
      const double r = m == 0 ? 0.0 : x[i] / m;
      ref.r.push_back(r);
      ref.code.push_back(nearest(r, m == 0));
    }
  }
  return ref;
}

// Nearest entry in double; a value exactly halfway takes the lower entry; an
// all-zero block takes the entry of smallest magnitude.
Ref ref_quantize_8bit(const std::vector<double>& x, int bs, const std::vector<float>& code) {
  int zero = 0;
  for (int k = 1; k < 256; ++k)
    if (std::fabs(code[k]) < std::fabs(code[zero])) zero = k;
  return ref_blockwise(x, bs, [&](double r, bool zero_block) {
    if (zero_block) return zero;
    int best = 0;
    for (int k = 1; k < 256; ++k)
      if (std::fabs(r - code[k]) < std::fabs(r - code[best])) best = k;
    return best;
  });
}

// The kernels compute r in float32 and compare it with float32 midpoints, so
// they may pick the other neighbour when r lies within a few float ulps of a
// midpoint. Such a mismatch is accepted only if it is adjacent and the
// reference ratio sits within 4 ulp (2^-21 relative) of the midpoint. For
// float32 inputs that is a one-in-a-million event, so the count is bounded
// too; bf16/f16 inputs (8/11 significant bits) land exactly on midpoints often.
void expect_codes_match(const std::vector<int>& ref, const std::vector<double>& r,
                        const std::vector<uint8_t>& got, const std::vector<float>& code,
                        const std::string& label, bool bound_count) {
  ASSERT_EQ(ref.size(), got.size());
  size_t near_ties = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (ref[i] == got[i]) continue;
    const int lo = std::min<int>(ref[i], got[i]);
    const double mid = (double(code[lo]) + double(code[lo + 1])) / 2;
    const bool adjacent = std::abs(ref[i] - int(got[i])) == 1;
    const bool near_tie = std::fabs(r[i] - mid) <= std::ldexp(std::fabs(mid), -21) + 1e-45;
    ASSERT_TRUE(adjacent && near_tie) << label << ": element " << i << " r=" << r[i] << " ref code "
                                      << ref[i] << " got " << int(got[i]);
    ++near_ties;
  }
  if (bound_count) {
    EXPECT_LE(near_ties, ref.size() / 1000 + 1) << label << ": too many near ties";
  }
}

// Nearest value in double over the 16 codes by value; halfway -> lower value;
// zero: +0's code, or -0's code for a negative value (FP4 keeps the sign).
Ref ref_quantize_4bit(const std::vector<double>& x, int bs, Format4 f) {
  const auto& t = kernels::format4_table(f);
  return ref_blockwise(x, bs, [&](double r, bool) {
    int best = 0;
    for (int c = 1; c < 16; ++c) {
      const double dc = std::fabs(r - t.value[c]), db = std::fabs(r - t.value[best]);
      if (dc < db || (dc == db && t.value[c] < t.value[best])) best = c;
    }
    if (t.value[best] == 0.0f) best = r < 0 ? t.negative_zero_code : t.zero_code;
    return best;
  });
}

// ---------------------------------------------------------------------------
// Running ops through a backend.

struct Blockwise8Out {
  std::vector<float> absmax;
  std::vector<uint8_t> codes;
};

Blockwise8Out run_quantize_8bit(Backend& be, const Input& in, int bs, const std::vector<float>& code,
                                kernels::StochasticRounding sr = {}) {
  const size_t n = in.value.size();
  auto x = upload(be, in.bytes);
  auto c = upload(be, code);
  auto a = be.allocate(kernels::num_blocks(n, bs) * 4);
  auto q = be.allocate(n);
  be.quantize_blockwise(*x, in.type, n, bs, *c, *a, *q, sr);
  return {download<float>(be, *a, kernels::num_blocks(n, bs)), download<uint8_t>(be, *q, n)};
}

std::vector<uint8_t> run_dequantize_8bit(Backend& be, const Blockwise8Out& q, int bs,
                                         const std::vector<float>& code, DType out_type,
                                         float offset = 0.0f) {
  const size_t n = q.codes.size();
  auto cb = upload(be, q.codes);
  auto ab = upload(be, q.absmax);
  auto cd = upload(be, code);
  auto out = be.allocate(n * kernels::dtype_size(out_type));
  be.dequantize_blockwise(*cb, *ab, *cd, n, bs, *out, out_type, offset);
  return download<uint8_t>(be, *out, n * kernels::dtype_size(out_type));
}

struct Packed4Out {
  std::vector<float> absmax;
  std::vector<uint8_t> packed;
};

Packed4Out run_quantize_4bit(Backend& be, const Input& in, int bs, Format4 f) {
  const size_t n = in.value.size();
  auto x = upload(be, in.bytes);
  auto a = be.allocate(kernels::num_blocks(n, bs) * 4);
  auto p = be.allocate(kernels::packed_4bit_bytes(n));
  be.quantize_4bit(*x, in.type, n, bs, f, *a, *p);
  return {download<float>(be, *a, kernels::num_blocks(n, bs)),
          download<uint8_t>(be, *p, kernels::packed_4bit_bytes(n))};
}

std::vector<uint8_t> run_dequantize_4bit(Backend& be, const Packed4Out& q, size_t n, int bs,
                                         Format4 f, DType out_type) {
  auto p = upload(be, q.packed);
  auto a = upload(be, q.absmax);
  auto out = be.allocate(n * kernels::dtype_size(out_type));
  be.dequantize_4bit(*p, *a, n, bs, f, *out, out_type);
  return download<uint8_t>(be, *out, n * kernels::dtype_size(out_type));
}

// ---------------------------------------------------------------------------
// Inputs.

struct Case {
  std::string name;
  std::vector<double> x;
};

std::vector<Case> cases(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<Case> out;
  auto gen = [&](const std::string& name, auto f) {
    Case c{name, std::vector<double>(n)};
    for (size_t i = 0; i < n; ++i) c.x[i] = f(i);
    out.push_back(std::move(c));
  };
  gen("normal", [&](size_t) { return normal(rng); });
  gen("uniform_scaled", [&](size_t) { return 1e3 * uniform(rng); });
  gen("constant", [&](size_t) { return 0.75; });
  gen("negative_constant", [&](size_t) { return -2.5; });
  gen("all_zero", [&](size_t) { return 0.0; });
  gen("extreme", [&](size_t) { return 3.0e38 * uniform(rng); });  // near FLT_MAX, no inf
  gen("denormal_sized", [&](size_t) { return 1e-41 * uniform(rng); });
  gen("tiny_normal", [&](size_t) { return 1e-30 * normal(rng); });
  gen("sparse_spikes", [&](size_t i) { return i % 97 == 0 ? 50.0 * normal(rng) : 1e-3 * normal(rng); });
  gen("mixed_zero_blocks", [&](size_t i) { return (i / 64) % 3 == 0 ? 0.0 : normal(rng); });
  return out;
}

bool representable(const Case& c, DType t) {
  // bf16 keeps float32's range; f16 overflows above 65504 and flushes below
  // 2^-24, which would turn these cases into different ones.
  if (t != DType::F16) return true;
  return c.name != "extreme" && c.name != "denormal_sized" && c.name != "tiny_normal" &&
         c.name != "uniform_scaled";
}

const DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16};
const DType kOutTypes[] = {DType::F32, DType::BF16, DType::F16};

std::vector<float> signed_map() {
  auto m = kernels::dynamic_map(true);
  return {m.begin(), m.end()};
}
std::vector<float> unsigned_map() {
  auto m = kernels::dynamic_map(false);
  return {m.begin(), m.end()};
}

// ---------------------------------------------------------------------------
// Codebooks.

TEST(Codebook, DynamicMapFollowsBitsandbytesFormula) {
  for (bool is_signed : {true, false}) {
    const auto map = kernels::dynamic_map(is_signed);
    std::vector<double> expect = {0.0, 1.0};
    for (int i = 0; i < 7; ++i) {
      const int K = is_signed ? (1 << i) : (1 << (i + 1));
      for (int k = 0; k < K; ++k) {
        const double v = std::pow(10.0, i - 6) * (0.1 + 0.9 * (k + 0.5) / K);
        expect.push_back(v);
        if (is_signed) expect.push_back(-v);
      }
    }
    std::sort(expect.begin(), expect.end());
    ASSERT_EQ(expect.size(), 256u);
    for (int i = 0; i < 256; ++i) EXPECT_EQ(map[i], float(expect[i])) << i;
    EXPECT_TRUE(kernels::codebook_is_valid(map.data(), 256));
  }
  const auto s = kernels::dynamic_map(true);
  EXPECT_EQ(s[127], 0.0f);  // 127 negatives below zero, 1.0 on top
  EXPECT_EQ(s[255], 1.0f);
  EXPECT_GT(s[0], -1.0f);
  EXPECT_EQ(kernels::zero_index(s.data(), 256), 127);
}

TEST(Codebook, FourBitTablesMatchPublishedValues) {
  const auto& nf4 = kernels::format4_table(Format4::NF4);
  EXPECT_EQ(nf4.value[0], -1.0f);
  EXPECT_EQ(nf4.value[7], 0.0f);
  EXPECT_EQ(nf4.value[8], 0.07958029955625534f);
  EXPECT_EQ(nf4.value[15], 1.0f);
  EXPECT_EQ(nf4.zero_code, 7);
  const auto& fp4 = kernels::format4_table(Format4::FP4);
  const double magnitude[8] = {0, 0.0625, 8, 12, 4, 6, 2, 3};
  for (int c = 0; c < 8; ++c) {
    EXPECT_EQ(fp4.value[c], float(magnitude[c] / 12)) << c;
    EXPECT_EQ(fp4.value[c + 8], -float(magnitude[c] / 12)) << c;
  }
  EXPECT_EQ(fp4.zero_code, 0);
  EXPECT_EQ(fp4.negative_zero_code, 8);
  // bitsandbytes' NF4 decision tree thresholds are the midpoints of the table.
  EXPECT_FLOAT_EQ(nf4.midpoint[7], 0.03979014977812767f);
  EXPECT_FLOAT_EQ(nf4.midpoint[14], 0.8614784181118011f);
}

TEST(DType, ConversionsMatchReferenceRounding) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const float f = kernels::bits_float(bits(rng));
    if (!std::isfinite(f)) continue;
    ASSERT_EQ(double(kernels::bf16_to_float(kernels::float_to_bf16(f))), ref_bf16(f)) << f;
    const double h = ref_f16(f);
    ASSERT_EQ(double(kernels::f16_to_float(kernels::float_to_f16(f))), h) << f;
  }
  for (uint32_t h = 0; h < 0x10000; ++h) {  // every half decodes to itself
    const float f = kernels::f16_to_float(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(kernels::float_to_f16(f), uint16_t(h)) << h;
  }
}

// Half conversions at every rounding boundary: each half decodes to its value
// (computed here from the fields with ldexp), and the floats at, just below
// and just above every midpoint between neighbouring halfs (and between
// 65504 and 65536, where inf starts) encode as the reference rounds them.
// Run again with flush-to-zero and denormals-are-zero set: the conversions
// are branch-free float arithmetic and must not depend on those modes.
void expect_half_conversions_exact(const std::string& mode) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    const float f = kernels::f16_to_float(uint16_t(h));
    ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << mode << " half " << h;
    if (exp == 0x1f) {
      ASSERT_TRUE(mant == 0 ? std::isinf(f) : std::isnan(f)) << mode << " half " << h;
      continue;
    }
    const double magnitude = exp == 0 ? std::ldexp(double(mant), -24)
                                      : std::ldexp(double(1024 + mant), int(exp) - 25);
    ASSERT_EQ(double(std::fabs(f)), magnitude) << mode << " half " << h;
  }
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // positive finite halfs and their successor
    const double lo = double(kernels::f16_to_float(uint16_t(h)));
    const double hi = h + 1 == 0x7c00 ? 65536.0 : double(kernels::f16_to_float(uint16_t(h + 1)));
    const float mid = float((lo + hi) / 2);  // 12 significant bits: exact in float
    for (float f : {std::nextafter(mid, 0.0f), mid, std::nextafter(mid, INFINITY)}) {
      for (float s : {f, -f}) {
        const uint16_t got = kernels::float_to_f16(s);
        ASSERT_EQ(double(kernels::f16_to_float(got)), ref_f16(s)) << mode << " float " << s;
        ASSERT_EQ((got & 0x8000) != 0, std::signbit(s)) << mode << " float " << s;
      }
    }
  }
  EXPECT_EQ(kernels::float_to_f16(INFINITY), 0x7c00) << mode;
  EXPECT_EQ(kernels::float_to_f16(-INFINITY), 0xfc00) << mode;
  EXPECT_EQ(kernels::float_to_f16(std::nanf("")), 0x7e00) << mode;
  EXPECT_EQ(kernels::float_to_f16(-std::nanf("")), 0xfe00) << mode;
  EXPECT_EQ(kernels::float_to_f16(FLT_TRUE_MIN), 0) << mode;
  EXPECT_EQ(kernels::float_to_f16(-FLT_TRUE_MIN), 0x8000) << mode;
}

// The bulk conversions (F16C instructions where built with AVX-512) against
// the scalar rule above, bit for bit: every half; and every float's top 20
// bits (sign, exponent, 11 mantissa bits: the 10 a normal half keeps and its
// rounding bit) with low 12 bits 0, 1, 0x7ff, 0x800, 0x801 and 0xfff, so that
// every rounding case (ties, sticky bits, subnormal halfs, where the rounding
// bit sits higher up, overflow to inf), inf and NaN occur.
void expect_bulk_half_conversions_match(const std::string& mode) {
  std::vector<uint16_t> halfs(0x10000);
  for (uint32_t h = 0; h < 0x10000; ++h) halfs[h] = uint16_t(h);
  std::vector<float> floats(0x10000);
  kernels::f16_to_float_n(halfs.data(), floats.data(), halfs.size());
  for (uint32_t h = 0; h < 0x10000; ++h)
    ASSERT_EQ(kernels::float_bits(floats[h]), kernels::float_bits(kernels::f16_to_float(uint16_t(h))))
        << mode << " half " << h;
  const uint32_t lows[] = {0x000u, 0x001u, 0x7ffu, 0x800u, 0x801u, 0xfffu};
  floats.resize(size_t(1) << 20);
  std::vector<uint16_t> got(floats.size());
  for (uint32_t low : lows) {
    for (uint32_t top = 0; top < (1u << 20); ++top) floats[top] = kernels::bits_float(top << 12 | low);
    kernels::float_to_f16_n(floats.data(), got.data(), floats.size());
    for (size_t j = 0; j < floats.size(); ++j)
      ASSERT_EQ(got[j], kernels::float_to_f16(floats[j]))
          << mode << " float bits " << kernels::float_bits(floats[j]);
  }
}

// check(mode) in the default floating-point modes, then with flush-to-zero
// and denormals-are-zero set (torch can set them).
template <typename Check>
void in_default_and_ftz_daz_modes(const Check& check) {
  check("default modes");
#if defined(__SSE__)
  const unsigned saved = _mm_getcsr();
  _mm_setcsr(saved | 0x8040u);  // FTZ (bit 15) and DAZ (bit 6)
  check("FTZ+DAZ");
  _mm_setcsr(saved);
#endif
}

TEST(DType, HalfConversionsExactAtEveryRoundingBoundary) {
  in_default_and_ftz_daz_modes(expect_half_conversions_exact);
}

TEST(DType, BulkHalfConversionsMatchTheScalarRuleEverywhere) {
  in_default_and_ftz_daz_modes(expect_bulk_half_conversions_match);
}

// ---------------------------------------------------------------------------
// 8-bit blockwise against the reference.

class KernelBackends : public ::testing::Test {
 protected:
  std::vector<std::pair<std::string, Backend*>> backends() {
    return testing::test_backends(opencl_);
  }
  // Every backend's codes of the F32 values x (blocks of bs), in both OpenCL layouts, are
  // `expect`; `what(i)` describes element i where one is not.
  template <typename What>
  void expect_8bit_codes(const std::vector<double>& x, int bs, const std::vector<float>& code,
                         const std::vector<uint8_t>& expect, const What& what) {
    const Input in = make_input(DType::F32, x);
    const auto check = [&](Backend& be, const std::string& bname) {
      const auto got = run_quantize_8bit(be, in, bs, code);
      for (size_t i = 0; i < x.size(); ++i)
        ASSERT_EQ(int(got.codes[i]), int(expect[i])) << bname << what(i);
    };
    for (auto [bname, be] : backends()) testing::for_each_layout(*be, bname, check);
  }
  template <typename What>
  void expect_4bit_codes(const std::vector<double>& x, int bs, Format4 format,
                         const std::vector<uint8_t>& expect, const What& what) {
    const Input in = make_input(DType::F32, x);
    const auto check = [&](Backend& be, const std::string& bname) {
      const auto got = run_quantize_4bit(be, in, bs, format);
      for (size_t i = 0; i < x.size(); ++i) {
        const int nibble = (i % 2 == 0) ? got.packed[i / 2] >> 4 : got.packed[i / 2] & 15;
        ASSERT_EQ(nibble, int(expect[i])) << bname << "/" << kernels::format4_name(format) << what(i);
      }
    };
    for (auto [bname, be] : backends()) testing::for_each_layout(*be, bname, check);
  }
  std::shared_ptr<Backend> opencl_;
};

// A value as a failure message shows it: nine significant digits tell floats apart.
std::string shown(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.9g", v);
  return text;
}

// The rules the code tests count against: the number of midpoints strictly below r, and the
// 4-bit code of r (the sorted code of that count; a negative r that rounds to zero keeps its
// sign where the format has a -0, as FP4).
template <typename Midpoints>
int midpoints_below(const Midpoints& mids, float r) {
  int below = 0;
  for (float mid : mids) below += r > mid;
  return below;
}

uint8_t nibble_of(const kernels::Format4Table& t, float r) {
  const uint8_t c = t.sorted_code[size_t(midpoints_below(t.midpoint, r))];
  return c == t.zero_code && r < 0.0f ? t.negative_zero_code : c;
}

TEST_F(KernelBackends, Blockwise8bitCodesMatchReference) {
  const size_t n = 4096 * 3 + 77;  // a short tail block
  for (auto [bname, be] : backends())
    for (const auto& code : {signed_map(), unsigned_map()})
      for (DType type : kFloatTypes)
        for (const Case& c : cases(n, 11)) {
          if (!representable(c, type)) continue;
          const bool is_unsigned = code[0] == 0.0f;
          Input in = make_input(type, c.x);
          if (is_unsigned)  // Adam's state2 is non-negative
            for (auto& v : in.value) v = std::fabs(v);
          if (is_unsigned) in = make_input(type, in.value);
          for (int bs : {64, 256, 4096}) {
            const std::string label = bname + "/" + c.name + "/" + kernels::dtype_name(type) +
                                      "/bs" + std::to_string(bs) + (is_unsigned ? "/unsigned" : "");
            const auto got = run_quantize_8bit(*be, in, bs, code);
            const auto ref = ref_quantize_8bit(in.value, bs, code);
            for (size_t b = 0; b < ref.absmax.size(); ++b)
              ASSERT_EQ(double(got.absmax[b]), ref.absmax[b]) << label << " block " << b;
            expect_codes_match(ref.code, ref.r, got.codes, code, label, type == DType::F32);
          }
        }
}

TEST_F(KernelBackends, Blockwise8bitDequantizeIsExactProduct) {
  const size_t n = 1000;  // not a multiple of any block size
  const auto code = signed_map();
  for (auto [bname, be] : backends())
    for (DType out_type : kOutTypes)
      for (float offset : {0.0f, 0.3125f}) {
        Input in = make_input(DType::F32, cases(n, 3)[0].x);
        const auto q = run_quantize_8bit(*be, in, 128, code);
        const auto out = run_dequantize_8bit(*be, q, 128, code, out_type, offset);
        for (size_t i = 0; i < n; ++i) {
          // code * absmax is exact in double; the kernel rounds it to float,
          // adds the offset (rounded again), then converts to the output type.
          const double product = double(float(double(code[q.codes[i]]) * q.absmax[i / 128]));
          const double expect = ref_store(double(float(product + offset)), out_type);
          ASSERT_EQ(out_value(out, out_type, i), expect)
              << bname << " " << kernels::dtype_name(out_type) << " element " << i;
        }
      }
}

TEST_F(KernelBackends, StochasticRoundingPicksANeighbourAndIsUnbiased) {
  const size_t n = 512;
  const int bs = 256;
  const auto code = signed_map();
  std::vector<double> raw(n);
  std::mt19937 rng(5);
  std::normal_distribution<double> normal;
  for (auto& v : raw) v = normal(rng);
  const Input in = make_input(DType::F32, raw);
  const auto ref = ref_quantize_8bit(in.value, bs, code);
  for (auto [bname, be] : backends()) {
    std::vector<double> mean(n, 0.0);
    const int draws = 400;
    for (int s = 0; s < draws; ++s) {
      const auto q = run_quantize_8bit(*be, in, bs, code, {true, uint64_t(1000 + s)});
      for (size_t i = 0; i < n; ++i) {
        const double r = ref.r[i];
        const int c = q.codes[i];
        // The chosen code brackets r: code[c] is the floor or the ceiling.
        const bool floor = code[c] <= r && (c == 255 || r < code[c + 1]);
        const bool ceil = code[c] >= r && (c == 0 || code[c - 1] <= r);
        ASSERT_TRUE(floor || ceil) << bname << " element " << i << " r=" << r << " code " << c;
        mean[i] += code[c] / double(draws);
      }
    }
    // E[code] = r exactly for stochastic rounding. Per element the spread is
    // at most gap/2, so the mean of 400 draws is within 4 sigma = gap/10.
    // Outside the codebook's range (r = -1 with the signed map, whose lowest
    // entry is -0.993) the value clamps to the end entry.
    for (size_t i = 0; i < n; ++i) {
      const double r = std::clamp(ref.r[i], double(code[0]), double(code[255]));
      const int lo = std::max(0, int(std::upper_bound(code.begin(), code.end(), float(r)) -
                                     code.begin()) - 1);
      const double gap = code[std::min(lo + 1, 255)] - code[lo];
      EXPECT_NEAR(mean[i], r, gap / 10 + 1e-7) << bname << " element " << i;
    }
  }
}

// ---------------------------------------------------------------------------
// 4-bit against the reference.

TEST_F(KernelBackends, FourBitCodesMatchReference) {
  for (auto [bname, be] : backends())
    for (Format4 f : {Format4::NF4, Format4::FP4})
      for (DType type : kFloatTypes)
        for (size_t n : {size_t(4096 * 2 + 33), size_t(1)})  // odd tails: a padded nibble
          for (const Case& c : cases(n, 19)) {
            if (!representable(c, type)) continue;
            const Input in = make_input(type, c.x);
            for (int bs : {32, 64, 128, 4096}) {
              const std::string label = bname + "/" + kernels::format4_name(f) + "/" + c.name +
                                        "/" + kernels::dtype_name(type) + "/bs" + std::to_string(bs);
              const auto got = run_quantize_4bit(*be, in, bs, f);
              const auto ref = ref_quantize_4bit(in.value, bs, f);
              ASSERT_EQ(got.packed.size(), (n + 1) / 2) << label;
              for (size_t b = 0; b < ref.absmax.size(); ++b)
                ASSERT_EQ(double(got.absmax[b]), ref.absmax[b]) << label << " block " << b;
              const auto& t = kernels::format4_table(f);
              for (size_t i = 0; i < n; ++i) {
                const int nib = (i % 2 == 0) ? got.packed[i / 2] >> 4 : got.packed[i / 2] & 15;
                if (nib == ref.code[i]) continue;
                // As for 8-bit: only a float-rounding near-tie may differ.
                const double mid = (double(t.value[nib]) + double(t.value[ref.code[i]])) / 2;
                ASSERT_LE(std::fabs(ref.r[i] - mid), std::ldexp(std::fabs(mid), -21))
                    << label << " element " << i << " r=" << ref.r[i] << " ref " << ref.code[i]
                    << " got " << nib;
              }
              if (n % 2) {
                EXPECT_EQ(got.packed.back() & 15, t.zero_code) << label << ": pad nibble";
              }
            }
          }
}

TEST_F(KernelBackends, FourBitDequantizeIsExactProduct) {
  const size_t n = 777;
  for (auto [bname, be] : backends())
    for (Format4 f : {Format4::NF4, Format4::FP4})
      for (DType out_type : kOutTypes) {
        const Input in = make_input(DType::F32, cases(n, 23)[0].x);
        const auto q = run_quantize_4bit(*be, in, 64, f);
        const auto out = run_dequantize_4bit(*be, q, n, 64, f, out_type);
        const auto& t = kernels::format4_table(f);
        for (size_t i = 0; i < n; ++i) {
          const int nib = (i % 2 == 0) ? q.packed[i / 2] >> 4 : q.packed[i / 2] & 15;
          const double expect = ref_store(double(t.value[nib]) * q.absmax[i / 64], out_type);
          ASSERT_EQ(out_value(out, out_type, i), expect) << bname << " element " << i;
        }
      }
}

// ---------------------------------------------------------------------------
// Every backend agrees with the CPU bit for bit on every op and case.

TEST_F(KernelBackends, EveryBackendMatchesTheCpuBitForBit) {
  Backend& cpu = kernels::cpu_backend();
  const auto code = signed_map();
  const auto agree = [&](Backend& be, const std::string& bname) {
    for (DType type : kFloatTypes)
      for (const Case& c : cases(8192 + 5, 31)) {
        if (!representable(c, type)) continue;
        const Input in = make_input(type, c.x);
        const std::string label = bname + "/" + c.name + "/" + kernels::dtype_name(type);
        for (int bs : {64, 1024, 4096}) {
          const auto a = run_quantize_8bit(cpu, in, bs, code);
          const auto b = run_quantize_8bit(be, in, bs, code);
          ASSERT_EQ(a.codes, b.codes) << label << " 8-bit codes bs" << bs;
          ASSERT_EQ(0, std::memcmp(a.absmax.data(), b.absmax.data(), a.absmax.size() * 4)) << label;
          const auto sa = run_quantize_8bit(cpu, in, bs, code, {true, 42});
          const auto sb = run_quantize_8bit(be, in, bs, code, {true, 42});
          ASSERT_EQ(sa.codes, sb.codes) << label << " stochastic codes bs" << bs;
          for (DType out_type : kOutTypes)
            ASSERT_EQ(run_dequantize_8bit(cpu, a, bs, code, out_type, 0.125f),
                      run_dequantize_8bit(be, a, bs, code, out_type, 0.125f))
                << label << " 8-bit dequantize to " << kernels::dtype_name(out_type);
        }
        for (Format4 f : {Format4::NF4, Format4::FP4})
          for (int bs : {32, 64, 2048}) {
            const auto a = run_quantize_4bit(cpu, in, bs, f);
            const auto b = run_quantize_4bit(be, in, bs, f);
            ASSERT_EQ(a.packed, b.packed) << label << " " << kernels::format4_name(f) << " bs" << bs;
            ASSERT_EQ(0, std::memcmp(a.absmax.data(), b.absmax.data(), a.absmax.size() * 4)) << label;
            for (DType out_type : kOutTypes)
              ASSERT_EQ(run_dequantize_4bit(cpu, a, in.value.size(), bs, f, out_type),
                        run_dequantize_4bit(be, a, in.value.size(), bs, f, out_type))
                  << label << " 4-bit dequantize to " << kernels::dtype_name(out_type);
          }
      }
  };
  // The quantizers in both OpenCL work layouts, whatever the device is.
  for (auto [bname, be] : backends())
    if (be != &cpu) testing::for_each_layout(*be, bname, agree);
}

#ifdef LOWBIT_WITH_OPENCL
// The OpenCL quantizers index in 32 bits wherever the tensor allows, so the cases above never
// reach their 64-bit form (tensors of 2^31 elements and more): on a backend that keeps 64-bit
// indices, 8-bit (nearest and stochastic) and NF4/FP4 codes bit for bit with the CPU, in both
// layouts, a tail block included.
TEST_F(KernelBackends, OpenClWithSixtyFourBitIndicesMatchesTheCpu) {
  LOWBIT_REQUIRE_OPENCL(cl);
  const auto wide = testing::opencl_with_wide_indices(*cl);
  Backend& cpu = kernels::cpu_backend();
  const auto code = signed_map();
  const Input in = make_input(DType::F32, cases(4096 + 5, 17)[0].x);
  const auto agree = [&](Backend& be, const std::string& bname) {
    for (bool stochastic : {false, true}) {
      const kernels::StochasticRounding rounding{stochastic, 9};
      const auto a = run_quantize_8bit(cpu, in, 256, code, rounding);
      const auto b = run_quantize_8bit(be, in, 256, code, rounding);
      EXPECT_EQ(a.codes, b.codes) << bname << (stochastic ? " stochastic" : "");
      EXPECT_EQ(0, std::memcmp(a.absmax.data(), b.absmax.data(), a.absmax.size() * 4)) << bname;
    }
    for (Format4 f : {Format4::NF4, Format4::FP4}) {
      const auto a = run_quantize_4bit(cpu, in, 64, f);
      const auto b = run_quantize_4bit(be, in, 64, f);
      EXPECT_EQ(a.packed, b.packed) << bname << " " << kernels::format4_name(f);
      EXPECT_EQ(0, std::memcmp(a.absmax.data(), b.absmax.data(), a.absmax.size() * 4)) << bname;
    }
  };
  testing::for_each_layout(*wide, "opencl, 64-bit indices", agree);
}
#endif

// A tensor of more blocks than a device runs groups at once (3M values; the
// H200 runs 16,896 blocks of 64 at a time through OpenCL, PoCL on two cores
// 256), so that each group of the OpenCL 8-bit quantizer walks several blocks
// with the code table it copied into local memory: bit for bit with the CPU,
// nearest and stochastic, in both layouts, a tail block included.
TEST_F(KernelBackends, EightBitQuantizerAgreesWhenGroupsWalkManyBlocks) {
  Backend& cpu = kernels::cpu_backend();
  const auto code = signed_map();
  std::mt19937 rng(5);
  std::normal_distribution<double> normal;
  std::vector<double> raw(12000 * 256 + 77);
  for (auto& v : raw) v = normal(rng);
  const Input in = make_input(DType::F32, raw);
  const auto agree = [&](Backend& be, const std::string& bname) {
    for (int bs : {64, 256}) {
      for (bool stochastic : {false, true}) {
        const kernels::StochasticRounding rounding{stochastic, 7};
        const auto a = run_quantize_8bit(cpu, in, bs, code, rounding);
        const auto b = run_quantize_8bit(be, in, bs, code, rounding);
        ASSERT_EQ(a.codes, b.codes) << bname << " bs" << bs << (stochastic ? " stochastic" : "");
        ASSERT_EQ(0, std::memcmp(a.absmax.data(), b.absmax.data(), a.absmax.size() * 4)) << bname;
      }
    }
  };
  for (auto [bname, be] : backends())
    if (be != &cpu) testing::for_each_layout(*be, bname, agree);
}

// The OpenCL encoder decides a code from a bucket of |r| (its exponent and top 7 mantissa
// bits, kernels/opencl/code_table.h) and one comparison with the next midpoint; the CPU's from
// piecewise-linear pieces. Every place where either can go wrong is visited, for each codebook:
// both edges and an inner value of every bucket of either sign, every midpoint and the floats on
// either side of it, zeros, and values below the first bucket. The reference is the rule itself,
// counted in the test: the number of midpoints strictly below r. The linear map and the last
// codebook have a midpoint below 2^-31, inside the first bucket, which holds everything below.
TEST_F(KernelBackends, EightBitCodesAreExactAtEveryBucketEdgeAndMidpoint) {
  std::vector<float> linear(256), tiny(256);
  for (int i = 0; i < 256; ++i) linear[size_t(i)] = float(-1.0 + 2.0 * i / 255.0);
  tiny = linear;
  tiny[127] = 0.0f;
  tiny[128] = 1e-10f;  // midpoint 5e-11 < 2^-31
  const std::vector<std::pair<std::string, std::vector<float>>> codebooks = {
      {"signed", signed_map()}, {"unsigned", unsigned_map()}, {"linear", linear}, {"tiny", tiny}};
  for (const auto& named : codebooks) {
    // Named references, not structured bindings: C++17 lambdas cannot capture those.
    const std::string& cname = named.first;
    const std::vector<float>& code = named.second;
    std::vector<float> r = {0.0f, -0.0f, 1e-45f, -1e-45f};
    std::mt19937 rng(7);
    for (uint32_t top = 96u << 7; top < 127u << 7; ++top)  // buckets from 2^-31 to 1
      for (uint32_t sign : {0u, 0x80000000u})
        for (uint32_t low : {0u, 0xffffu, uint32_t(rng() & 0xffffu)})
          r.push_back(kernels::bits_float(sign | top << 16 | low));
    for (int e = -45; e < -31; ++e)  // below the first bucket, low bits of every kind
      for (int j = 0; j < 16; ++j)
        for (float sign : {1.0f, -1.0f}) r.push_back(sign * std::ldexp(1.0f + j / 17.0f, e));
    for (int i = 0; i < 255; ++i) {
      const float m = kernels::code_midpoint(code.data(), i);
      for (float v : {m, std::nextafter(m, -2.0f), std::nextafter(m, 2.0f)})
        if (std::fabs(v) <= 1.0f) r.push_back(v);
    }
    // Blocks of 256 whose first element is 1, so that absmax is 1 and r is the value itself.
    constexpr int kBs = 256;
    std::vector<double> x;
    for (size_t i = 0; i < r.size(); ++i) {
      if (x.size() % kBs == 0) x.push_back(1.0);
      x.push_back(double(r[i]));
    }
    std::vector<float> mids;
    for (int k = 0; k < 255; ++k) mids.push_back(kernels::code_midpoint(code.data(), k));
    std::vector<uint8_t> expect(x.size());
    for (size_t i = 0; i < x.size(); ++i) expect[i] = uint8_t(midpoints_below(mids, float(x[i])));
    expect_8bit_codes(x, kBs, code, expect, [&](size_t i) {
      return "/" + cname + ": r = " + shown(x[i]) + " (element " + std::to_string(i) + ")";
    });
  }
}

// Codes encode x / m, m the block's absmax, correctly rounded as the CPU divides (a GPU build
// without -cl-fp32-correctly-rounded-divide-sqrt, or a quotient taken as x times 1 / m, would
// be off by an ulp here and there). On NVIDIA's OpenCL a block takes the quotient through
// 1 / m and one correction when m lies in [2^-60, 2^60] and no nonzero value is below m 2^-40,
// and divides otherwise (quantize.cl). The tests above have m = 1, where every way of dividing
// is exact. Here the absmax is no power of two: mantissas of all ones, of a single low bit and
// in between, at exponents from 2^-70 to 2^70; each block holds m, values x whose x / m lands
// on every midpoint of the codebook and on the floats either side (x near the midpoint times
// m, and the floats around that x); the first block of each m also holds zeros of both signs
// and values 2^-39 to 2^-41 of m, so both roads are taken. The codes must be those of the
// quotient the host divides, for the signed dynamic map, NF4 and FP4, in both layouts.
TEST_F(KernelBackends, QuantizersDivideByTheirAbsmaxExactly) {
  const std::vector<float> absmaxes = {3.7f,
                                       0.3f,
                                       std::nextafter(1.0f, 2.0f),
                                       std::nextafter(2.0f, 0.0f),
                                       std::ldexp(1.5f, -59),
                                       std::ldexp(1.7f, 59),
                                       std::ldexp(1.3f, -70),
                                       std::ldexp(1.1f, 70)};
  // Blocks of `bs`, each m and then values x (|x| <= m) aimed at r = x / m near each target.
  const auto blocks = [&](const std::vector<float>& targets, int bs) {
    std::vector<double> x;
    for (float m : absmaxes) {
      std::vector<float> v = {0.0f, -0.0f, m * 0x1p-41f, -m * 0x1p-40f, m * 0x1.8p-40f,
                              -m * 0x1p-39f};
      for (float t : targets)
        for (float r : {t, std::nextafter(t, -2.0f), std::nextafter(t, 2.0f)}) {
          float xv = float(double(r) * double(m));
          for (int u = 0; u < 2; ++u) xv = std::nextafter(xv, -4.0f * m);
          for (int u = 0; u < 5; ++u, xv = std::nextafter(xv, 4.0f * m))
            if (std::fabs(xv) <= m) v.push_back(xv);
        }
      for (size_t i = 0; i < v.size(); ++i) {
        if (x.size() % size_t(bs) == 0) x.push_back(double(m));
        x.push_back(double(v[i]));
      }
      while (x.size() % size_t(bs) != 0) x.push_back(0.0);  // the next m starts a block
    }
    return x;
  };
  // r = x / m of element i, as the host divides it (the block's absmax is its first element).
  const auto quotients = [](const std::vector<double>& x, int bs) {
    std::vector<float> r(x.size());
    for (size_t i = 0; i < x.size(); ++i) r[i] = float(x[i]) / float(x[i / size_t(bs) * size_t(bs)]);
    return r;
  };
  const auto where = [](const std::vector<double>& x, const std::vector<float>& r, size_t i) {
    return ": x = " + shown(x[i]) + ", x / absmax = " + shown(r[i]) +
           " (element " + std::to_string(i) + ")";
  };
  {
    const auto code = signed_map();
    std::vector<float> mids;
    for (int i = 0; i < 255; ++i) mids.push_back(kernels::code_midpoint(code.data(), i));
    constexpr int kBs = 256;
    const std::vector<double> x = blocks(mids, kBs);
    const std::vector<float> r = quotients(x, kBs);
    std::vector<uint8_t> expect(x.size());
    for (size_t i = 0; i < x.size(); ++i) expect[i] = uint8_t(midpoints_below(mids, r[i]));
    expect_8bit_codes(x, kBs, code, expect, [&](size_t i) { return where(x, r, i); });
  }
  for (Format4 format : {Format4::NF4, Format4::FP4}) {
    const kernels::Format4Table& t = kernels::format4_table(format);
    constexpr int kBs = 64;
    const std::vector<double> x = blocks({t.midpoint.begin(), t.midpoint.end()}, kBs);
    const std::vector<float> r = quotients(x, kBs);
    std::vector<uint8_t> expect(x.size());
    for (size_t i = 0; i < x.size(); ++i) expect[i] = nibble_of(t, r[i]);
    expect_4bit_codes(x, kBs, format, expect, [&](size_t i) { return where(x, r, i); });
  }
}

// ---------------------------------------------------------------------------
// Bad arguments: clear errors, never a crash.

template <typename Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  testing::expect_error<kernels::Error>(fn, needle);
}

// The 4-bit twin: the OpenCL quantizer decides a nibble from a bucket of |r| (exponent and top
// 3 mantissa bits, kernels/opencl/code_table.h, build_table4) and one comparison; the CPU counts
// midpoints. Both edges and an inner value of every bucket of either sign, every midpoint and
// its neighbours, zeros of both signs and values below the first bucket, for NF4 and FP4,
// against the rule counted here: the sorted code of the number of midpoints below r, and a
// negative r that rounds to zero keeping its sign where the format has a -0 (FP4).
TEST_F(KernelBackends, FourBitCodesAreExactAtEveryBucketEdgeAndMidpoint) {
  for (Format4 format : {Format4::NF4, Format4::FP4}) {
    const kernels::Format4Table& t = kernels::format4_table(format);
    std::vector<float> r = {0.0f, -0.0f, 1e-45f, -1e-45f, 1.0f, -1.0f};
    std::mt19937 rng(11);
    for (uint32_t top = 103u << 3; top < 127u << 3; ++top)  // buckets from 2^-24 to 1
      for (uint32_t sign : {0u, 0x80000000u})
        for (uint32_t low : {0u, 0xfffffu, uint32_t(rng() & 0xfffffu)})
          r.push_back(kernels::bits_float(sign | top << 20 | low));
    for (int e = -40; e < -24; ++e)  // below the first bucket
      for (float sign : {1.0f, -1.0f}) r.push_back(sign * std::ldexp(1.3f, e));
    for (float m : t.midpoint)  // (FP4's last "midpoint" is its largest value, 1)
      for (float v : {m, std::nextafter(m, -2.0f), std::nextafter(m, 2.0f)})
        if (std::fabs(v) <= 1.0f) r.push_back(v);
    // Blocks of 64 whose first element is 1, so that absmax is 1 and r is the value itself.
    constexpr int kBs = 64;
    std::vector<double> x;
    for (float v : r) {
      if (x.size() % kBs == 0) x.push_back(1.0);
      x.push_back(double(v));
    }
    std::vector<uint8_t> expect(x.size());
    for (size_t i = 0; i < x.size(); ++i) expect[i] = nibble_of(t, float(x[i]));
    expect_4bit_codes(x, kBs, format, expect, [&](size_t i) {
      return ": r = " + shown(x[i]) + " (element " + std::to_string(i) + ")";
    });
  }
}

TEST_F(KernelBackends, BadArgumentsAreRefused) {
  for (const auto& named : backends()) {
    // Lambdas below capture it: a structured binding cannot be captured
    // before C++20 (clang refuses; the sanitizer build uses clang).
    auto* be = named.second;
    auto x = be->allocate(1000 * 4);
    auto code = upload(*be, signed_map());
    auto absmax = be->allocate(60);  // 1000 values in blocks of 64 need 16 floats
    auto codes = be->allocate(1000);
    for (int bs : {0, 48, 32, 8192})
      expect_error([&] { be->quantize_blockwise(*x, DType::F32, 1000, bs, *code, *absmax, *codes); },
                   "blocksize " + std::to_string(bs) + " is not supported");
    expect_error([&] { be->quantize_4bit(*x, DType::F32, 1000, 16, Format4::NF4, *absmax, *codes); },
                 "blocksize 16 is not supported");
    expect_error([&] { be->quantize_blockwise(*x, DType::U8, 1000, 64, *code, *absmax, *codes); },
                 "dtype uint8");
    expect_error([&] { be->quantize_blockwise(*x, DType::F32, 1001, 64, *code, *absmax, *codes); },
                 "buffer 'x' holds 4000 bytes");
    expect_error([&] { be->quantize_blockwise(*x, DType::F32, 1000, 64, *code, *absmax, *codes); },
                 "buffer 'absmax' holds 60 bytes; expected at least 64");
    auto other = kernels::cpu_backend().allocate(4096);
    if (be != &kernels::cpu_backend())
      expect_error([&] { be->dequantize_4bit(*other, *absmax, 10, 64, Format4::NF4, *x, DType::F32); },
                   "belongs to another backend");
    std::vector<uint8_t> big(5000);
    expect_error([&] { be->write(*codes, big.data(), big.size()); }, "outside a buffer");
  }
}

TEST(BackendSelection, UnknownKindAndDeviceAreRefused) {
  expect_error([] { kernels::make_backend({"tpu", -1, ""}); },
               "expected one of: auto, cpu, opencl, cuda");
  if (!kernels::cuda_built())
    expect_error([] { kernels::make_backend({"cuda", -1, ""}); }, "has no CUDA backend");
  else if (kernels::cuda_device_count() > 0)
    expect_error([] { kernels::make_backend({"cuda", 99, ""}); }, "is not available");
  EXPECT_EQ(kernels::make_backend({"cpu", -1, ""})->name(), "cpu");
  if (!kernels::opencl_devices().empty()) {
    expect_error([] { kernels::make_backend({"opencl", 99, ""}); }, "out of range");
    expect_error([] { kernels::make_backend({"opencl", -1, "no-such-device"}); }, "no OpenCL device matches");
    // The same device yields the same shared backend (one context per device).
    EXPECT_EQ(kernels::make_backend({"opencl", 0, ""}).get(), kernels::make_backend({"opencl", 0, ""}).get());
  }
}

}  // namespace
}  // namespace lowbit
