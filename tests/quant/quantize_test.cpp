// Torch-level quantization: round-trip error against the levels bitsandbytes'
// own tests accept, double quantization cost and accuracy, odd shapes and
// dtypes, bad input, and the OpenCL backend through the same API.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include "quant/codebook.h"
#include "quant/metrics.h"
#include "quant/quantize.h"
#include "tests/kernels/backends.h"
#include "tests/support/expect_error.h"

namespace lowbit::quant {
namespace {

using lowbit::testing::expect_error;

torch::Tensor randn_1024() {
  torch::manual_seed(0);
  return torch::randn({1024, 1024});
}

Quantize4bitOptions opts4(Format f, int64_t bs, bool dq = false) {
  Quantize4bitOptions o;
  o.format = f;
  o.blocksize = bs;
  o.double_quant = dq;
  return o;
}

// bitsandbytes tests/test_functional.py (test_4bit_quant) expects, for
// randn(1024, 1024), these mean absolute / mean relative errors and accepts
// up to 1e-3 above them (block 32 is not in that table: its error levels are
// the ones ../shared/DESIGN.md records, without a relative-error level). A single
// matrix at block 4096 has only 256 blocks and its errors vary by +-0.002
// between draws, so errors are averaged over four matrices. NF4 must also beat
// FP4: it is information-theoretically optimal for normal data (QLoRA, sec. 3).
TEST(Quantize4bit, RoundTripErrorWithinBitsandbytesLevels) {
  std::vector<torch::Tensor> draws;
  for (int seed = 0; seed < 4; ++seed) {
    torch::manual_seed(seed);
    draws.push_back(torch::randn({1024, 1024}));
  }
  struct Level {
    int64_t bs;
    double nf4_err, fp4_err, nf4_rel, fp4_rel;
  };
  const double kSlack = 1e-3;
  for (const Level& l : {Level{32, 0.0677, 0.0889, -1, -1},
                         Level{64, 0.072792, 0.096545, 0.203299, 0.260130},
                         Level{256, 0.080326, 0.108685, 0.226044, 0.289842},
                         Level{4096, 0.092537, 0.129573, 0.262457, 0.337228}}) {
    double nf4_err = 0, fp4_err = 0, nf4_rel = 0, fp4_rel = 0;
    for (const torch::Tensor& A : draws) {
      auto [pn, sn] = quantize_4bit(A, opts4(Format::NF4, l.bs));
      auto [pf, sf] = quantize_4bit(A, opts4(Format::FP4, l.bs));
      const torch::Tensor bn = dequantize_4bit(pn, sn), bf = dequantize_4bit(pf, sf);
      nf4_err += mean_abs_error(A, bn) / draws.size();
      fp4_err += mean_abs_error(A, bf) / draws.size();
      nf4_rel += mean_relative_error(A, bn) / draws.size();
      fp4_rel += mean_relative_error(A, bf) / draws.size();
    }
    EXPECT_LT(nf4_err, l.nf4_err + kSlack) << "block " << l.bs;
    EXPECT_LT(fp4_err, l.fp4_err + kSlack) << "block " << l.bs;
    if (l.nf4_rel > 0) {
      EXPECT_LT(nf4_rel, l.nf4_rel + kSlack) << "block " << l.bs;
      EXPECT_LT(fp4_rel, l.fp4_rel + kSlack) << "block " << l.bs;
    }
    EXPECT_LT(nf4_err, fp4_err) << "block " << l.bs;
  }
}

// bitsandbytes' test_dynamic_blockwise_quantization accepts, for the signed
// dynamic map on randn at every block size 64..4096, mean abs error < 0.011 and
// mean relative error < 0.018. The map's top decade [0.1, 1] has 64 codes per
// sign (spacing 0.014), which puts the mean relative error near 1.5% at block
// 256; the norm-relative error stays near 1%.
TEST(QuantizeBlockwise, DynamicMapRoundTripError) {
  const torch::Tensor A = randn_1024();
  for (int64_t bs : {64, 256, 4096}) {
    BlockwiseOptions o;
    o.blocksize = bs;
    auto [codes, state] = quantize_blockwise(A, o);
    const torch::Tensor back = dequantize_blockwise(codes, state);
    EXPECT_LT(mean_abs_error(A, back), 0.011) << "block " << bs;
    EXPECT_LT(mean_relative_error(A, back), 0.018) << "block " << bs;
    EXPECT_LT(((A - back).norm() / A.norm()).item<double>(), bs <= 256 ? 0.0115 : 0.014) << bs;
  }
}

TEST(Quantize4bit, DoubleQuantCostAndAccuracy) {
  torch::manual_seed(1);
  const torch::Tensor W = torch::randn({4096, 4096});
  auto [p_plain, s_plain] = quantize_4bit(W, opts4(Format::NF4, 64, false));
  auto [p_dq, s_dq] = quantize_4bit(W, opts4(Format::NF4, 64, true));
  ASSERT_TRUE(s_dq.nested);
  EXPECT_EQ(s_dq.absmax.scalar_type(), torch::kUInt8);
  EXPECT_EQ(s_dq.nested->blocksize, 256);
  EXPECT_TRUE(torch::equal(p_plain, p_dq));  // same 4-bit codes; only absmax storage differs

  // QLoRA paper, sec. 3: 4 + 8/64 + 32/(64*256) = 4.127 bits/param with DQ.
  const StorageReport r = storage_report(p_dq, s_dq);
  EXPECT_LE(r.payload_bits_per_param(), 4.13);
  EXPECT_LE(r.total_bits_per_param(), 4.13);
  EXPECT_NEAR(r.payload_bits_per_param(), 4.0 + 8.0 / 64 + 32.0 / (64 * 256), 1e-4);
  EXPECT_NEAR(storage_report(p_plain, s_plain).payload_bits_per_param(), 4.5, 1e-4);

  // Each weight moves by its block's absmax error. That error is the signed
  // dynamic map's rounding of (absmax - mean) at block 256: spacing 0.9/64 in
  // the top decade, RMS 0.014/sqrt(12) = 0.4% of the nested absmax (~1.3 for
  // block-64 maxima of N(0,1), which average ~2.4), i.e. ~0.2% of the absmax.
  const torch::Tensor w_plain = dequantize_4bit(p_plain, s_plain);
  const torch::Tensor w_dq = dequantize_4bit(p_dq, s_dq);
  const double rel = ((w_dq - w_plain).norm() / w_plain.norm()).item<double>();
  EXPECT_LT(rel, 3e-3);
  // That shift is nearly orthogonal to the 4-bit rounding error, so the error
  // against the original weights grows by only ~0.1%.
  const double err_plain = mean_abs_error(W, w_plain), err_dq = mean_abs_error(W, w_dq);
  EXPECT_LT(err_dq / err_plain - 1.0, 2e-3);
  // The absmax itself: worst case half a top-decade step of the nested absmax.
  const torch::Tensor am = dequantize_absmax(s_dq);
  EXPECT_LT(((am - s_plain.absmax).abs() / s_plain.absmax).max().item<double>(), 0.01);
}

TEST(Quantize4bit, ShapesDtypesAndTails) {
  torch::manual_seed(2);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16})
    for (std::vector<int64_t> shape : {std::vector<int64_t>{7, 13}, {1001}, {3, 64}, {1}, {0}}) {
      const torch::Tensor A = torch::randn(shape).to(dtype);
      auto [packed, state] = quantize_4bit(A);
      EXPECT_EQ(packed.size(0), (A.numel() + 1) / 2);
      EXPECT_EQ(packed.size(1), 1);
      const torch::Tensor back = dequantize_4bit(packed, state);
      EXPECT_EQ(back.sizes(), A.sizes());
      EXPECT_EQ(back.scalar_type(), dtype);
      if (A.numel()) {
        EXPECT_LT(mean_abs_error(A, back), 0.12);  // NF4 error on N(0,1) data, with margin
      }
    }
}

TEST(Quantize, SpecialInputsRoundTripExactly) {
  // Zero and constant blocks encode exactly: absmax = |c|, code 0 or +-1.
  for (float c : {0.0f, 3.5f, -0.25f}) {
    const torch::Tensor A = torch::full({300}, c);
    auto [p, s] = quantize_4bit(A, opts4(Format::NF4, 64, false));
    EXPECT_TRUE(torch::equal(dequantize_4bit(p, s), A)) << c;
    auto [q, t] = quantize_blockwise(A);
    // The signed dynamic map has +1 but no -1: a negative constant decodes to
    // its lowest entry, -(0.1 + 0.9 * 63.5 / 64) times the absmax.
    const float lowest = kernels::dynamic_map(true)[0];
    const torch::Tensor expect = c < 0 ? torch::full({300}, lowest * -c) : A;
    EXPECT_TRUE(torch::equal(dequantize_blockwise(q, t), expect)) << c;
  }
}

TEST(Quantize, NonContiguousInputEqualsContiguous) {
  torch::manual_seed(3);
  const torch::Tensor A = torch::randn({128, 96}).t();  // a transposed view
  ASSERT_FALSE(A.is_contiguous());
  auto [p1, s1] = quantize_4bit(A);
  auto [p2, s2] = quantize_4bit(A.contiguous());
  EXPECT_TRUE(torch::equal(p1, p2));
  EXPECT_TRUE(torch::equal(dequantize_4bit(p1, s1), dequantize_4bit(p2, s2)));
}

TEST(Quantize, BadInputIsRefusedClearly) {
  expect_error([] { quantize_4bit(torch::randn({64}, torch::kFloat64)); },
                     "dtype Double; expected float32, float16 or bfloat16");
  expect_error([] { quantize_blockwise(torch::ones({64}, torch::kInt32)); }, "dtype Int");
  expect_error([] { quantize_4bit(torch::tensor({1.0f, INFINITY})); }, "inf or nan");
  expect_error([] { quantize_blockwise(torch::tensor({1.0f, NAN})); }, "inf or nan");
  expect_error([] { quantize_4bit(torch::randn({64}), opts4(Format::NF4, 48)); },
                     "blocksize 48 is not supported");
  expect_error([] { quantize_4bit(torch::randn({64}), opts4(Format::NF4, 8192)); },
                     "blocksize 8192 is not supported");
  BlockwiseOptions o;
  o.blocksize = 32;
  expect_error([&] { quantize_blockwise(torch::randn({64}), o); }, "blocksize 32");
  o.blocksize = 64;
  o.code = torch::linspace(1, -1, 256);  // descending
  expect_error([&] { quantize_blockwise(torch::randn({64}), o); }, "strictly ascending");
  expect_error([] { quantize_4bit(torch::randn({64}), opts4(Format::DynamicSigned, 64)); },
                     "not a 4-bit format");
  expect_error([] { parse_format("int3"); }, "expected one of: dynamic, dynamic_unsigned, nf4, fp4");
  expect_error([] { quantize_4bit(torch::Tensor()); }, "undefined");

  // Named variables, not a structured binding: clang before 16 cannot capture one.
  const auto quantized = quantize_4bit(torch::randn({100}));
  const torch::Tensor& packed = quantized.first;
  const QuantState& state = quantized.second;
  QuantState wrong = state;
  wrong.shape = {101, 2};
  expect_error([&] { dequantize_4bit(packed, wrong); }, "needs 101");
  expect_error([&] { dequantize_blockwise(packed, state); }, "use dequantize_4bit");
  expect_error([&] { dequantize_4bit(packed.to(torch::kInt32), state); }, "uint8");
}

TEST(Quantize, OpenClBackendMatchesCpu) {
  LOWBIT_REQUIRE_OPENCL(cl);
  torch::manual_seed(4);
  const torch::Tensor A = torch::randn({333, 65});
  for (Format f : {Format::NF4, Format::FP4}) {
    auto [pc, sc] = quantize_4bit(A, opts4(f, 64, true));
    auto [po, so] = quantize_4bit(A, opts4(f, 64, true), *cl);
    EXPECT_TRUE(torch::equal(pc, po));
    EXPECT_TRUE(torch::equal(sc.absmax, so.absmax));
    EXPECT_EQ(sc.offset, so.offset);
    EXPECT_TRUE(torch::equal(dequantize_4bit(pc, sc), dequantize_4bit(po, so, *cl)));
  }
  auto [qc, tc] = quantize_blockwise(A);
  auto [qo, to] = quantize_blockwise(A, {}, *cl);
  EXPECT_TRUE(torch::equal(qc, qo));
  EXPECT_TRUE(torch::equal(dequantize_blockwise(qc, tc), dequantize_blockwise(qo, to, *cl)));
}

TEST(Metrics, MatchDefinitions) {
  const torch::Tensor a = torch::tensor({1.0f, -2.0f, 4.0f});
  const torch::Tensor b = torch::tensor({1.5f, -2.0f, 3.0f});
  EXPECT_DOUBLE_EQ(mean_abs_error(a, b), 0.5);
  EXPECT_NEAR(mean_relative_error(a, b), (0.5 / 1 + 0 + 1.0 / 4) / 3, 1e-8);
  EXPECT_NEAR(snr_db(a, b), 10 * std::log10(21.0 / 1.25), 1e-9);
  EXPECT_TRUE(std::isinf(snr_db(a, a)));
}

}  // namespace
}  // namespace lowbit::quant
