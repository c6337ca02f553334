// Int8 quantization (symmetric / asymmetric, per channel / per group) and
// the error report every format shares: round trips within half a step per
// element, the bitsandbytes row-wise form, figures against sums written out
// here, storage, and refusals.
#include <cmath>
#include <random>
#include <vector>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "quant/int8.h"
#include "quant/metrics.h"
#include "quant/quantize.h"
#include "tests/support/expect_error.h"

namespace lowbit::quant {
namespace {

using lowbit::testing::expect_error;

// Rows of very different magnitudes, one all-zero row, exact zeros inside.
torch::Tensor test_weight() {
  torch::manual_seed(4);
  torch::Tensor w = torch::randn({48, 96}) * torch::logspace(-3, 2, 48).unsqueeze(1);
  w[7].zero_();
  w.index_put_({torch::indexing::Slice(), 5}, 0.0f);
  return w;
}

// The scale of every element, broadcast back to the weight's shape.
torch::Tensor element_scale(const Int8Quantized& q, const torch::Tensor& w) {
  const int64_t groups = q.scale.numel();
  return q.scale.reshape({groups, 1}).expand({groups, w.numel() / groups}).reshape(w.sizes());
}

TEST(Int8Quantize, RoundTripsWithinHalfAStep) {
  const torch::Tensor w = test_weight();
  for (bool symmetric : {true, false})
    for (int64_t group : {int64_t(0), int64_t(32)}) {
      Int8Options o;
      o.symmetric = symmetric;
      o.group_size = group;
      const Int8Quantized q = quantize_int8(w, o);
      SCOPED_TRACE(std::string(symmetric ? "symmetric" : "asymmetric") + " group " +
                   std::to_string(group));
      EXPECT_EQ(q.codes.scalar_type(), torch::kInt8);
      EXPECT_EQ(q.scale.sizes(), torch::IntArrayRef({48, group ? 96 / group : 1}));
      EXPECT_EQ(q.offset.defined(), !symmetric);
      const torch::Tensor back = dequantize_int8(q);
      // Rounding to the nearest code is off by at most half a step. The codes
      // come from float products (w * 127/absmax or w / scale), a few ulps
      // (~1e-5 of a step at |code| <= 128) from the exact quotient, and the
      // dequantized value is one more float rounding (6e-8 relative).
      const torch::Tensor bound = element_scale(q, w) * (0.5 + 1e-4) + 1e-6 * w.abs();
      EXPECT_TRUE(((back - w).abs() <= bound).all().item<bool>())
          << "worst excess " << ((back - w).abs() - bound).max().item<float>();
      // Zero is exact in both schemes, and the zero row stays zero.
      EXPECT_TRUE((back.select(1, 5) == 0).all().item<bool>());
      EXPECT_TRUE((back[7] == 0).all().item<bool>());
      const int lowest = symmetric ? -127 : -128;
      EXPECT_GE(q.codes.min().item<int>(), lowest);
      // Each group's range reaches the outermost code: 127 in magnitude
      // (symmetric) or both ends -128 and 127 (asymmetric, whose range
      // includes 0: the w >= 0 groups reach 127, the others -128).
      const int64_t groups = q.scale.numel();
      const torch::Tensor c = q.codes.reshape({groups, -1}).to(torch::kInt32);
      const torch::Tensor nonzero = q.scale.reshape({-1}) > 0;
      const torch::Tensor reach =
          symmetric ? c.abs().amax(1) == 127 : (c.amax(1) == 127) | (c.amin(1) == -128);
      EXPECT_TRUE(
          (reach | ~nonzero | (w.reshape({groups, -1}).abs().amax(1) == 0)).all().item<bool>());
    }
}

TEST(Int8Quantize, AsymmetricUsesTheWholeRangeOfAOneSidedWeight) {
  // All-positive values: the symmetric form wastes the negative codes, the
  // asymmetric one spends its 256 codes on [0, max] and halves the step.
  torch::manual_seed(2);
  const torch::Tensor w = torch::rand({16, 64}) + 0.5;
  Int8Options asym;
  asym.symmetric = false;
  const Int8Quantized s = quantize_int8(w), a = quantize_int8(w, asym);
  EXPECT_NEAR((s.scale / a.scale).mean().item<double>(), 255.0 / 127.0, 1e-3);
  EXPECT_LT(quantization_error(w, a).mean_abs, 0.6 * quantization_error(w, s).mean_abs);
}

TEST(Int8Quantize, GroupsTrackLocalMagnitudes) {
  // One large value per row widens a per-channel scale for the whole row; a
  // group of 32 confines it to its own group.
  torch::manual_seed(3);
  torch::Tensor w = torch::randn({32, 256});
  w.index_put_({torch::indexing::Slice(), 0}, 50.0f);
  Int8Options grouped;
  grouped.group_size = 32;
  EXPECT_LT(quantization_error(w, quantize_int8(w, grouped)).mean_abs,
            0.3 * quantization_error(w, quantize_int8(w)).mean_abs);
}

TEST(Int8Quantize, SymmetricPerChannelIsBitsandbytesRowwise) {
  const torch::Tensor w = test_weight();
  auto [codes, scb] = quantize_int8_rowwise(w);
  EXPECT_EQ(scb.sizes(), torch::IntArrayRef({48}));
  EXPECT_TRUE(torch::equal(scb, w.abs().amax(1)));  // SCB is the row absmax itself
  const Int8Quantized q = quantize_int8(w);
  EXPECT_TRUE(torch::equal(codes, q.codes));
  EXPECT_TRUE(torch::equal(dequantize_int8_rowwise(codes, scb), dequantize_int8(q)));
  // The codes against the definition round(w * (127 / SCB)) in double: they
  // may differ only where the float product sits within 1e-5 of a half.
  const torch::Tensor x = w.to(torch::kFloat64) * (127.0 / scb.to(torch::kFloat64)).unsqueeze(1);
  const torch::Tensor exact = torch::round(torch::nan_to_num(x, 0.0));
  const torch::Tensor differs = exact != codes.to(torch::kFloat64);
  const torch::Tensor near_half = ((x - x.floor()) - 0.5).abs() < 1e-5;
  EXPECT_TRUE((~differs | near_half).all().item<bool>());
}

// The report's figures from plain loops over the values.
TEST(QuantizationError, FiguresEqualIndependentSums) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  std::vector<float> a(1000), b(1000);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = normal(rng);
    b[i] = a[i] + 0.05f * normal(rng);
  }
  double abs_sum = 0, max_abs = 0, rel_sum = 0, ee = 0, aa = 0, bb = 0, ab = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = double(a[i]) - double(b[i]);
    abs_sum += std::fabs(e);
    max_abs = std::max(max_abs, std::fabs(e));
    rel_sum += std::fabs(e) / (std::fabs(double(a[i])) + 1e-8);
    ee += e * e;
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
    ab += double(a[i]) * b[i];
  }
  const ErrorReport r = quantization_error(torch::tensor(a), torch::tensor(b));
  // Both sides sum the same doubles, in different orders: 1e-12 relative.
  EXPECT_NEAR(r.mean_abs, abs_sum / 1000, 1e-12);
  EXPECT_EQ(r.max_abs, max_abs);
  EXPECT_NEAR(r.mean_relative, rel_sum / 1000, 1e-10);
  EXPECT_NEAR(r.relative_percent, 100 * std::sqrt(ee / aa), 1e-10);
  EXPECT_NEAR(r.snr_db, 10 * std::log10(aa / ee), 1e-9);
  EXPECT_NEAR(r.cosine, ab / std::sqrt(aa * bb), 1e-12);
  const ErrorReport same = quantization_error(torch::tensor(a), torch::tensor(a));
  EXPECT_EQ(same.relative_percent, 0.0);
  EXPECT_TRUE(std::isinf(same.snr_db));
  EXPECT_NEAR(same.cosine, 1.0, 1e-12);
  EXPECT_NE(r.to_string().find("cosine"), std::string::npos);
}

TEST(QuantizationError, ReachableForEveryFormat) {
  torch::manual_seed(0);
  const torch::Tensor w = torch::randn({256, 256});
  Quantize4bitOptions fp4;
  fp4.format = Format::FP4;
  auto [nf4_codes, nf4_state] = quantize_4bit(w);
  auto [fp4_codes, fp4_state] = quantize_4bit(w, fp4);
  BlockwiseOptions bw;
  bw.blocksize = 256;
  auto [q8, s8] = quantize_blockwise(w, bw);
  const Int8Quantized i8 = quantize_int8(w);
  const ErrorReport nf4 = quantization_error(w, nf4_codes, nf4_state);
  const ErrorReport fp4r = quantization_error(w, fp4_codes, fp4_state);
  const ErrorReport dyn8 = quantization_error(w, q8, s8);
  const ErrorReport int8 = quantization_error(w, i8);
  EXPECT_EQ(nf4.mean_abs, quantization_error(w, dequantize_4bit(nf4_codes, nf4_state)).mean_abs);
  EXPECT_EQ(dyn8.snr_db, quantization_error(w, dequantize_blockwise(q8, s8)).snr_db);
  EXPECT_EQ(int8.cosine, quantization_error(w, dequantize_int8(i8)).cosine);
  // More bits, less error; NF4 beats FP4 on normal data (QLoRA, sec. 3).
  EXPECT_LT(nf4.relative_percent, fp4r.relative_percent);
  EXPECT_LT(int8.relative_percent, nf4.relative_percent);
  EXPECT_LT(dyn8.relative_percent, nf4.relative_percent);
  EXPECT_GT(int8.cosine, 0.9999);
  std::printf("relative error %%: nf4 %.3f, fp4 %.3f, 8-bit blockwise %.3f, int8 %.3f\n",
              nf4.relative_percent, fp4r.relative_percent, dyn8.relative_percent,
              int8.relative_percent);
}

TEST(QuantizationError, StorageOfInt8) {
  const torch::Tensor w = test_weight();
  const StorageReport channel = storage_report(quantize_int8(w));
  EXPECT_EQ(channel.params, 48 * 96);
  EXPECT_EQ(channel.code_bytes, 48 * 96);
  EXPECT_EQ(channel.absmax_bytes, 48 * 4);
  Int8Options asym;
  asym.symmetric = false;
  asym.group_size = 32;
  const StorageReport grouped = storage_report(quantize_int8(w, asym));
  EXPECT_EQ(grouped.absmax_bytes, 48 * 3 * (4 + 1));  // float scale + int8 offset per group
  EXPECT_NEAR(grouped.payload_bits_per_param(), 8.0 + 8.0 * 5 / 32, 1e-12);
}

TEST(Int8Quantize, RefusesBadInput) {
  expect_error(
      [] {
        quantize_int8(torch::ones({4, 6}), {true, 4});
      },
      "group_size 4 does not divide the row length 6");
  expect_error([] { quantize_int8(torch::ones({4, 6}), {true, -1}); }, "group_size must be");
  expect_error([] { quantize_int8(torch::ones({4, 6}, torch::kInt32)); }, "floating-point");
  expect_error([] { quantize_int8(torch::full({2, 2}, NAN)); }, "inf or nan");
  expect_error([] { quantize_int8_rowwise(torch::ones({4})); }, "expected a weight [out, in]");
}

}  // namespace
}  // namespace lowbit::quant
