// Linear4bit against torch::linear with the dequantized weight, computed in
// double: forward (batch 1 / 7 / 64, row lengths that are and are not
// multiples of the block, bias or not, float32 and bfloat16 compute, CPU and
// OpenCL), the input and bias gradients, finite differences, storage cost.
#include <cmath>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lora/linear4bit.h"
#include "lora/matmul_4bit.h"
#include "quant/quantize.h"
#include "tests/kernels/backends.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using testing::expect_error;

using lora::Linear4bit;
using lora::Linear4bitOptions;

// The exact result of a float computation and the error allowed for it.
struct Expected {
  torch::Tensor value;  // double
  torch::Tensor bound;  // double, elementwise
};

// Every kernel path sums in float32 with at most ~300 sequential additions per
// output (a 256-wide tile, then one per tile or block): worst-case rounding
// 300 * 2^-24 * sum|terms| = 1.8e-5 sum|terms|, allowed as 2e-5. A bfloat16
// output adds half an ulp (2^-9 relative), allowed as 2^-8.
Expected expect_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                       bool bf16) {
  auto exact = [&](const torch::Tensor& t) {
    return (bf16 ? t.to(torch::kBFloat16) : t).to(torch::kFloat64);
  };
  const torch::Tensor xd = exact(x), wd = w.to(torch::kFloat64);
  const torch::Tensor bd = bias.defined() ? exact(bias) : torch::Tensor();
  Expected e;
  e.value = torch::linear(xd, wd, bd);
  e.bound = 2e-5 * torch::linear(xd.abs(), wd.abs(), bd.defined() ? bd.abs() : bd) + 1e-30;
  if (bf16) e.bound = e.bound + std::ldexp(1.0, -8) * e.value.abs();
  return e;
}

void expect_within(const torch::Tensor& got, const Expected& e, const std::string& what) {
  ASSERT_EQ(got.sizes(), e.value.sizes()) << what;
  const torch::Tensor err = (got.to(torch::kFloat64) - e.value).abs();
  const double excess = (err - e.bound).max().item<double>();
  EXPECT_LE(excess, 0.0) << what << ": max error " << err.max().item<double>()
                         << " exceeds its bound somewhere";
}

struct Shape {
  int64_t in, out, blocksize;
};
// 128: rows of whole blocks (the CPU's vectorised gemv); 100: blocks
// straddle rows; 77: odd rows, so every other row starts on a low nibble.
const Shape kShapes[] = {{128, 48, 64}, {100, 37, 64}, {77, 20, 32}};

std::vector<std::pair<std::string, std::shared_ptr<kernels::Backend>>> all_backends() {
  std::vector<std::pair<std::string, std::shared_ptr<kernels::Backend>>> out = {{"cpu", nullptr}};
  if (auto cl = testing::opencl_or_null()) out.push_back({"opencl", cl});
  return out;
}

Linear4bit make_layer(const Shape& s, bool bias, torch::ScalarType compute,
                      std::shared_ptr<kernels::Backend> backend, quant::Format format = quant::Format::NF4) {
  torch::nn::Linear linear(torch::nn::LinearOptions(s.in, s.out).bias(bias));
  return Linear4bit(linear, Linear4bitOptions()
                                .format(format)
                                .blocksize(s.blocksize)
                                .compute_dtype(compute)
                                .backend(std::move(backend)));
}

// Linear4bitOptions::int8_gemv: only a single token with grad mode off takes
// the int8 path. Its error is bounded in the kernel tests
// (Matmul4bit.Int8GemvStaysWithinItsBound); here it must differ from the exact
// path and stay within 1% of sum |w x| (the bound is about 0.6% for normal x
// and NF4), and everything else must be the exact path bit for bit.
TEST(Linear4bit, Int8GemvOnlyForOneTokenWithoutGrad) {
  torch::manual_seed(3);
  torch::nn::Linear linear(torch::nn::LinearOptions(256, 40));
  Linear4bit exact(linear, Linear4bitOptions());
  Linear4bit fast(linear, Linear4bitOptions().int8_gemv(true));
  const torch::Tensor x = torch::randn({1, 1, 256}), xs = torch::randn({3, 256});
  torch::Tensor y_fast, y_exact, ys_fast, ys_exact;
  {
    torch::NoGradGuard no_grad;
    y_fast = fast->forward(x);
    y_exact = exact->forward(x);
    ys_fast = fast->forward(xs);
    ys_exact = exact->forward(xs);
  }
  ASSERT_EQ(y_fast.sizes(), y_exact.sizes());
  EXPECT_FALSE(torch::equal(y_fast, y_exact)) << "the int8 path did not run";
  const torch::Tensor w = exact->dequantized_weight().to(torch::kFloat64);
  const torch::Tensor terms =
      torch::linear(x.to(torch::kFloat64).abs(), w.abs(), linear->bias.to(torch::kFloat64).abs());
  EXPECT_LE(((y_fast - y_exact).to(torch::kFloat64).abs() - 0.01 * terms).max().item<double>(),
            0.0);
  EXPECT_TRUE(torch::equal(ys_fast, ys_exact)) << "three tokens must take the exact path";
  // Grad mode on (training, even with nothing to differentiate): exact.
  EXPECT_TRUE(torch::equal(fast->forward(x), y_exact));
}

TEST(Linear4bit, ForwardEqualsLinearOfDequantizedWeight) {
  torch::manual_seed(0);
  for (auto& [bname, backend] : all_backends())
    for (const Shape& s : kShapes)
      for (bool bias : {false, true})
        for (auto compute : {torch::kFloat32, torch::kBFloat16}) {
          Linear4bit layer = make_layer(s, bias, compute, backend);
          const torch::Tensor w = layer->dequantized_weight();
          for (int64_t batch : {1, 7, 64}) {
            const torch::Tensor x = torch::randn({batch, s.in});
            const std::string what = bname + " in " + std::to_string(s.in) + " batch " +
                                     std::to_string(batch) + (bias ? " bias " : " ") +
                                     c10::toString(compute);
            torch::Tensor y;
            {
              torch::NoGradGuard no_grad;
              y = layer->forward(x);
            }
            EXPECT_EQ(y.scalar_type(), torch::kFloat32) << what << ": output keeps x's dtype";
            expect_within(y, expect_linear(x, w, layer->bias, compute == torch::kBFloat16), what);
          }
        }
}

TEST(Linear4bit, AcceptsLeadingDimensionsAndHalfInputs) {
  torch::manual_seed(1);
  Linear4bit layer = make_layer({64, 24, 64}, true, torch::kFloat32, nullptr);
  const torch::Tensor x = torch::randn({2, 3, 64});
  const torch::Tensor y = layer->forward(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 24}));
  expect_within(y, expect_linear(x, layer->dequantized_weight(), layer->bias, false), "3-d input");
  // A float16 input is computed in float32 and returned as float16.
  const torch::Tensor yh = layer->forward(x.to(torch::kFloat16));
  EXPECT_EQ(yh.scalar_type(), torch::kFloat16);
  EXPECT_TRUE(torch::allclose(yh.to(torch::kFloat32), layer->forward(x.to(torch::kFloat16).to(torch::kFloat32)),
                              /*rtol=*/1e-3, /*atol=*/1e-3));  // one float16 rounding of y: 2^-11
}

TEST(Linear4bit, InputAndBiasGradientsEqualAutogradThroughDequantizedWeight) {
  torch::manual_seed(2);
  for (auto& [bname, backend] : all_backends())
    for (const Shape& s : kShapes)
      for (auto compute : {torch::kFloat32, torch::kBFloat16}) {
        const bool bf16 = compute == torch::kBFloat16;
        Linear4bit layer = make_layer(s, true, compute, backend);
        layer->bias.set_requires_grad(true);
        for (int64_t batch : {1, 7, 64}) {
          const std::string what = bname + " in " + std::to_string(s.in) + " batch " +
                                   std::to_string(batch) + " " + c10::toString(compute);
          const torch::Tensor x = torch::randn({batch, s.in}).set_requires_grad(true);
          const torch::Tensor r = torch::randn({batch, s.out});
          layer->bias.mutable_grad() = torch::Tensor();
          (layer->forward(x) * r).sum().backward();
          // dL/dx = r W, computed by torch's autograd in double on the dequantized weight.
          const torch::Tensor xd = x.detach().to(torch::kFloat64).set_requires_grad(true);
          const torch::Tensor wd = layer->dequantized_weight().to(torch::kFloat64);
          const torch::Tensor rd = (bf16 ? r.to(torch::kBFloat16) : r).to(torch::kFloat64);
          (torch::linear(xd, wd) * rd).sum().backward();
          Expected e{xd.grad(), 2e-5 * torch::matmul(rd.abs(), wd.abs()) + 1e-30};
          if (bf16) e.bound = e.bound + std::ldexp(1.0, -8) * e.value.abs();
          expect_within(x.grad(), e, what + " dx");
          // The bias gradient is the column sum of dy (exact in float for these sizes
          // up to float32 rounding of the sum: 64 terms, 64 * 2^-24 relative).
          const torch::Tensor db = rd.sum(0);
          Expected eb{db, 64 * std::ldexp(1.0, -24) * rd.abs().sum(0) + 1e-30};
          if (bf16) eb.bound = eb.bound + std::ldexp(1.0, -8) * db.abs();
          expect_within(layer->bias.grad(), eb, what + " dbias");
        }
      }
}

// Central differences of L(x) = sum(y * r), evaluated in double from the
// layer's float32 outputs. L is linear in x, so the difference quotient is
// exact up to the rounding of the two evaluations: |dL| <= 2e-5 sum|terms|,
// divided by the step 2h = 0.25, far below the 1e-3 relative tolerance used.
TEST(Linear4bit, GradientMatchesFiniteDifferences) {
  torch::manual_seed(3);
  for (auto& [bname, backend] : all_backends()) {
    Linear4bit layer = make_layer({40, 24, 32}, true, torch::kFloat32, backend);
    const torch::Tensor x = torch::randn({3, 40});
    const torch::Tensor r = torch::randn({3, 24});
    auto loss = [&](const torch::Tensor& input) {
      torch::NoGradGuard no_grad;
      return (layer->forward(input).to(torch::kFloat64) * r.to(torch::kFloat64)).sum().item<double>();
    };
    const torch::Tensor xg = x.clone().set_requires_grad(true);
    (layer->forward(xg) * r).sum().backward();
    const double h = 0.125;  // a power of two: x +- h is exact in float32 for |x| < 2^20 h
    for (int64_t k = 0; k < x.numel(); k += 7) {
      torch::Tensor plus = x.clone(), minus = x.clone();
      plus.view(-1)[k] += h;
      minus.view(-1)[k] -= h;
      const double numeric = (loss(plus) - loss(minus)) / (2 * h);
      const double analytic = xg.grad().view(-1)[k].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-3 * (1.0 + std::fabs(numeric))) << bname << " x[" << k << "]";
    }
  }
}

TEST(Linear4bit, StoresAbout4Point127BitsPerParameter) {
  torch::manual_seed(4);
  Linear4bit layer = make_layer({1024, 1024, 64}, false, torch::kFloat32, nullptr);
  // QLoRA paper, section 3: 4 bits + 8/64 (absmax codes) + 32/(64*256)
  // (nested absmax) = 4.127 bits per parameter; the 4-byte offset adds 3e-5.
  EXPECT_NEAR(layer->storage().payload_bits_per_param(), 4.0 + 8.0 / 64 + 32.0 / (64 * 256), 1e-3);
  Linear4bit plain(torch::nn::Linear(1024, 1024), Linear4bitOptions().double_quant(false));
  EXPECT_NEAR(plain->storage().payload_bits_per_param(), 4.5, 1e-9);  // 4 + 32/64
}

TEST(Linear4bit, Fp4LayerMatchesItsDequantizedWeightToo) {
  torch::manual_seed(5);
  Linear4bit layer = make_layer({96, 33, 64}, true, torch::kFloat32, nullptr, quant::Format::FP4);
  const torch::Tensor x = torch::randn({5, 96});
  expect_within(layer->forward(x), expect_linear(x, layer->dequantized_weight(), layer->bias, false), "fp4");
}

TEST(Linear4bit, BadInputsAreRefusedWithClearMessages) {
  Linear4bit layer = make_layer({64, 8, 64}, true, torch::kFloat32, nullptr);
  expect_error([&] { layer->forward(torch::randn({3, 65})); }, "expected [..., 64]");
  expect_error([&] { layer->forward(torch::ones({3, 64}, torch::kInt32)); }, "Int");
  expect_error([&] { make_layer({64, 8, 64}, false, torch::kFloat64, nullptr); },
               "compute_dtype Double is not supported");
  expect_error([&] { make_layer({64, 8, 48}, false, torch::kFloat32, nullptr); },
               "blocksize 48 is not supported");
  auto other = quant::quantize_4bit(torch::randn({8, 32}));
  expect_error([&] { layer->set_quantized_weight(other.first, other.second); },
               "the new weight has shape [8, 32]");
  // An 8-bit state of the right shape is refused before it replaces anything.
  Linear4bit plain(torch::nn::Linear(torch::nn::LinearOptions(64, 8)),
                   Linear4bitOptions().double_quant(false));
  const torch::Tensor before = plain->forward(torch::ones({1, 64}));
  auto eight_bit = quant::quantize_blockwise(torch::randn({8, 64}));
  expect_error([&] { plain->set_quantized_weight(eight_bit.first, eight_bit.second); },
               "expected a 4-bit state");
  EXPECT_TRUE(torch::equal(plain->forward(torch::ones({1, 64})), before));
  // Replacing the weight between forward and backward would differentiate the wrong function.
  const torch::Tensor x = torch::randn({2, 64}, torch::requires_grad());
  const torch::Tensor y = layer->forward(x).sum();
  auto same = quant::quantize_4bit(torch::randn({8, 64}));
  layer->set_quantized_weight(same.first, same.second);
  expect_error([&] { y.backward(); }, "replaced between forward and backward");
}

TEST(Linear4bit, RebuildsFromItsBitsandbytesStateDict) {
  torch::manual_seed(7);
  Linear4bit layer = make_layer({96, 40, 64}, true, torch::kFloat32, nullptr);
  const quant::StateDict sd = layer->bnb_state_dict("model.proj.");
  EXPECT_TRUE(sd.count("model.proj.weight.quant_state.bitsandbytes__nf4"));
  Linear4bit copy = lora::linear4bit_from_bnb(sd, "model.proj.", "test state dict");
  EXPECT_TRUE(torch::equal(copy->packed_weight(), layer->packed_weight()));
  const torch::Tensor x = torch::randn({3, 96});
  EXPECT_TRUE(torch::equal(copy->forward(x), layer->forward(x)));
  expect_error([&] { lora::linear4bit_from_bnb(sd, "model.other.", "test state dict"); },
               "test state dict: no 'model.other.weight.quant_state.bitsandbytes__nf4'");
}

TEST(Matmul4bit, FunctionalFormMatchesTheLayer) {
  torch::manual_seed(6);
  const torch::Tensor w = torch::randn({24, 96});
  const auto quantized = quant::quantize_4bit(w);
  const torch::Tensor& packed = quantized.first;
  const quant::QuantState& state = quantized.second;
  const torch::Tensor x = torch::randn({4, 96});
  const torch::Tensor bias = torch::randn({24});
  expect_within(lora::matmul_4bit(x, packed, state, bias),
                expect_linear(x, quant::dequantize_4bit(packed, state), bias, false), "matmul_4bit");
  expect_error([&] { lora::matmul_4bit(torch::randn({4, 95}), packed, state); }, "expected [..., 96]");
}

}  // namespace
}  // namespace lowbit
