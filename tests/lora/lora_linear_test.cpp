// LoraLinear and apply_lora: initialisation, scaling (LoRA / rsLoRA), the
// forward and the A/B/x gradients against the explicit formula differentiated
// by torch in double, finite differences, dropout, merge/unmerge on both base
// kinds, and apply_lora's selection and freezing.
#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lora/apply_lora.h"
#include "lora/linear4bit.h"
#include "lora/lora_linear.h"
#include "lora/module_paths.h"
#include "lora/quantize_model.h"
#include "quant/codebook.h"
#include "quant/quantize.h"
#include "tests/lora/test_models.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using testing::expect_error;

using lora::Linear4bit;
using lora::LoraLinear;
using lora::LoraOptions;

// A LoRA layer over a Linear or a Linear4bit base, with random (non-zero) A
// and B so that the adapter path contributes.
LoraLinear make_lora(bool quantized, int64_t in, int64_t out, const LoraOptions& options) {
  torch::nn::Linear base(in, out);
  std::shared_ptr<torch::nn::Module> b = base.ptr();
  if (quantized) b = Linear4bit(base).ptr();
  LoraLinear layer(b, options);
  torch::NoGradGuard no_grad;
  layer->lora_B.copy_(0.1 * torch::randn_like(layer->lora_B, torch::kFloat32));
  return layer;
}

// The base weight as the layer uses it (dequantized for a Linear4bit).
torch::Tensor base_weight(LoraLinear& layer, torch::Tensor* bias) {
  if (auto* q = dynamic_cast<lora::Linear4bitImpl*>(layer->base_layer().get())) {
    *bias = q->bias;
    return q->dequantized_weight();
  }
  auto* l = dynamic_cast<torch::nn::LinearImpl*>(layer->base_layer().get());
  *bias = l->bias;
  return l->weight;
}

TEST(LoraLinear, StartsAsTheBaseWithKaimingUniformA) {
  torch::manual_seed(0);
  torch::nn::Linear base(200, 30);
  LoraLinear layer(base.ptr(), LoraOptions().r(16));
  EXPECT_EQ(layer->lora_A.sizes(), (std::vector<int64_t>{16, 200}));
  EXPECT_EQ(layer->lora_B.sizes(), (std::vector<int64_t>{30, 16}));
  EXPECT_EQ(layer->lora_A.scalar_type(), torch::kFloat16);
  EXPECT_TRUE(layer->lora_B.eq(0).all().item<bool>());
  // kaiming_uniform_(a = sqrt(5)): bound = sqrt(6 / ((1 + a^2) fan_in)) = 1/sqrt(fan_in).
  const double bound = 1.0 / std::sqrt(200.0);
  const torch::Tensor a = layer->lora_A.to(torch::kFloat32);
  EXPECT_LE(a.abs().max().item<double>(), bound * (1 + 1e-3));  // fp16 rounding
  EXPECT_GT(a.abs().max().item<double>(), 0.9 * bound);         // 3200 draws reach the edge
  const torch::Tensor x = torch::randn({4, 200});
  EXPECT_TRUE(torch::equal(layer->forward(x), base->forward(x)));
}

TEST(LoraLinear, ScalingIsAlphaOverROrOverSqrtR) {
  torch::nn::Linear base(8, 8);
  EXPECT_DOUBLE_EQ(LoraLinear(base.ptr(), LoraOptions().r(16).alpha(32))->scaling(), 2.0);
  EXPECT_DOUBLE_EQ(LoraLinear(base.ptr(), LoraOptions().r(16).alpha(32).use_rslora(true))->scaling(),
                   8.0);
}

// y = base(x) + s (x A^T) B^T and L = sum(y * R), differentiated by torch's
// autograd in double with the layer's (fp16-stored) A and B as exact inputs.
TEST(LoraLinear, ForwardAndGradientsEqualTheExplicitFormula) {
  torch::manual_seed(1);
  for (bool quantized : {false, true})
    for (bool rslora : {false, true}) {
      const std::string what = std::string(quantized ? "Linear4bit" : "Linear") + " base" +
                               (rslora ? " rslora" : "");
      LoraLinear layer = make_lora(quantized, 64, 48, LoraOptions().r(4).alpha(8).use_rslora(rslora));
      const torch::Tensor x = torch::randn({2, 5, 64}).set_requires_grad(true);
      const torch::Tensor r = torch::randn({2, 5, 48});
      const torch::Tensor y = layer->forward(x);
      (y * r).sum().backward();

      torch::Tensor bias;
      const torch::Tensor w = base_weight(layer, &bias).detach().to(torch::kFloat64);
      auto d = [](const torch::Tensor& t) { return t.detach().to(torch::kFloat64); };
      const torch::Tensor xd = d(x).set_requires_grad(true);
      const torch::Tensor ad = d(layer->lora_A).set_requires_grad(true);
      const torch::Tensor bd = d(layer->lora_B).set_requires_grad(true);
      const double s = layer->scaling();
      const torch::Tensor yd = torch::linear(xd, w, d(bias)) +
                               s * torch::matmul(torch::matmul(xd, ad.t()), bd.t());
      (yd * d(r)).sum().backward();

      // Float32 compute over <= 64-term sums: 2e-5 of the magnitudes (see
      // linear4bit_test). dA, dB are rounded to fp16 (half an ulp: 2^-11
      // relative) when autograd hands them to the fp16 parameters.
      EXPECT_TRUE(torch::allclose(y.to(torch::kFloat64), yd, 1e-4, 1e-4)) << what;
      EXPECT_TRUE(torch::allclose(x.grad().to(torch::kFloat64), xd.grad(), 1e-4, 1e-4)) << what;
      const torch::Tensor ga = layer->lora_A.grad().to(torch::kFloat64);
      const torch::Tensor gb = layer->lora_B.grad().to(torch::kFloat64);
      EXPECT_EQ(layer->lora_A.grad().scalar_type(), torch::kFloat16) << what;
      EXPECT_TRUE(torch::allclose(ga, ad.grad(), std::ldexp(1.0, -10), 1e-4)) << what;
      EXPECT_TRUE(torch::allclose(gb, bd.grad(), std::ldexp(1.0, -10), 1e-4)) << what;
    }
}

// Central differences in double of L(A, B) = sum(y * R) for float32-stored
// adapters. L is quadratic in (A, B) jointly but linear in each entry, so the
// central difference is exact up to the rounding of the two float32
// evaluations (<= 2e-5 sum|terms| / 2h with 2h = 0.25): 1e-3 tolerance.
TEST(LoraLinear, GradientsMatchFiniteDifferences) {
  torch::manual_seed(2);
  LoraLinear layer = make_lora(true, 40, 24, LoraOptions().r(3).alpha(6).dtype(torch::kFloat32));
  const torch::Tensor x = torch::randn({3, 40});
  const torch::Tensor r = torch::randn({3, 24});
  (layer->forward(x) * r).sum().backward();
  auto loss = [&] {
    torch::NoGradGuard no_grad;
    return (layer->forward(x).to(torch::kFloat64) * r.to(torch::kFloat64)).sum().item<double>();
  };
  const double h = 0.125;
  for (torch::Tensor* p : {&layer->lora_A, &layer->lora_B}) {
    const torch::Tensor grad = p->grad().clone();
    for (int64_t k = 0; k < p->numel(); k += 5) {
      torch::NoGradGuard no_grad;
      const float v = p->view(-1)[k].item<float>();
      p->view(-1)[k] = v + h;
      const double up = loss();
      p->view(-1)[k] = v - h;
      const double down = loss();
      p->view(-1)[k] = v;
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(grad.view(-1)[k].item<double>(), numeric, 1e-3 * (1 + std::fabs(numeric)))
          << (p == &layer->lora_A ? "A" : "B") << "[" << k << "]";
    }
  }
}

TEST(LoraLinear, DropoutActsOnTheAdapterPathOnly) {
  torch::manual_seed(3);
  torch::nn::Linear base(32, 16);
  LoraLinear layer(base.ptr(), LoraOptions().r(4).dropout(0.5));
  const torch::Tensor x = torch::randn({8, 32});
  layer->train();
  // B = 0: the adapter adds nothing, so dropout must not touch the base's input.
  EXPECT_TRUE(torch::equal(layer->forward(x), base->forward(x)));
  {
    torch::NoGradGuard no_grad;
    layer->lora_B.normal_();
  }
  const torch::Tensor train_out = layer->forward(x);
  layer->eval();
  const torch::Tensor eval_out = layer->forward(x);
  EXPECT_FALSE(torch::allclose(train_out, eval_out)) << "dropout is active in training";
  const torch::Tensor a = layer->lora_A.to(torch::kFloat32), b = layer->lora_B.to(torch::kFloat32);
  EXPECT_TRUE(torch::allclose(eval_out, base->forward(x) + layer->scaling() * x.matmul(a.t()).matmul(b.t()),
                              1e-4, 1e-4))
      << "no dropout in eval mode";
}

TEST(LoraLinear, MergeMatchesAdapterAndUnmergeRestoresLinearBase) {
  torch::manual_seed(4);
  LoraLinear layer = make_lora(false, 64, 32, LoraOptions().r(8).alpha(16));
  const torch::Tensor x = torch::randn({6, 64});
  torch::NoGradGuard no_grad;
  const torch::Tensor adapter_out = layer->forward(x);
  auto* base = dynamic_cast<torch::nn::LinearImpl*>(layer->base_layer().get());
  const torch::Tensor w0 = base->weight.clone();
  layer->merge();
  EXPECT_TRUE(layer->merged());
  // One float32 rounding of W + s B A per weight and the usual matmul rounding.
  EXPECT_TRUE(torch::allclose(layer->forward(x), adapter_out, 1e-5, 1e-5));
  layer->unmerge();
  EXPECT_TRUE(torch::allclose(base->weight, w0, 0, 1e-6));  // (W + d) - d: two roundings of |W| < 1
  EXPECT_TRUE(torch::allclose(layer->forward(x), adapter_out, 1e-5, 1e-5));
}

// Merging into a 4-bit base requantizes W + s B A. Encoding picks the nearest
// NF4 value to w / m (m = the block's absmax) and decoding multiplies by the
// stored absmax m' (double-quantized), so each merged weight is within
// half_gap * m + |m' - m| of W + s B A (|code| <= 1), half_gap being half the
// largest gap between neighbouring NF4 values; the merged output is then
// within sum_i |x_i| times that bound of the adapter output.
TEST(LoraLinear, MergeIntoLinear4bitIsWithinRequantizationErrorAndUnmergeIsExact) {
  torch::manual_seed(5);
  LoraLinear layer = make_lora(true, 128, 40, LoraOptions().r(8).alpha(16));
  auto* q = dynamic_cast<lora::Linear4bitImpl*>(layer->base_layer().get());
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({6, 128});
  const torch::Tensor adapter_out = layer->forward(x);
  const torch::Tensor packed0 = q->packed_weight().clone();
  const torch::Tensor absmax0 = q->quant_state().absmax.clone();
  const torch::Tensor target = q->dequantized_weight() + layer->delta_weight();
  layer->merge();

  const torch::Tensor nf4 = std::get<0>(quant::codebook(quant::Format::NF4).sort());
  const double half_gap = (nf4.slice(0, 1) - nf4.slice(0, 0, -1)).max().item<double>() / 2;
  const torch::Tensor m = target.reshape({-1, 64}).abs().amax(1, /*keepdim=*/true);
  const torch::Tensor stored = quant::dequantize_absmax(q->quant_state()).reshape({-1, 1});
  const torch::Tensor bound =
      (half_gap * m + (stored - m).abs() + 1e-6).expand({-1, 64}).reshape(target.sizes());
  const torch::Tensor err = (q->dequantized_weight() - target).abs();
  EXPECT_TRUE((err <= bound).all().item<bool>()) << "max excess " << (err - bound).max().item<double>();
  const torch::Tensor out_bound = torch::matmul(x.abs(), bound.t()) + 1e-4;
  EXPECT_TRUE(((layer->forward(x) - adapter_out).abs() <= out_bound).all().item<bool>());

  layer->unmerge();
  EXPECT_TRUE(torch::equal(q->packed_weight(), packed0)) << "unmerge restores the codes bit for bit";
  EXPECT_TRUE(torch::equal(q->quant_state().absmax, absmax0));
  EXPECT_TRUE(torch::equal(layer->forward(x), adapter_out));
}

TEST(LoraLinear, BadOptionsAreRefused) {
  torch::nn::Linear base(8, 8);
  expect_error([&] { LoraLinear(base.ptr(), LoraOptions().r(0)); }, "rank r must be at least 1");
  expect_error([&] { LoraLinear(base.ptr(), LoraOptions().dropout(1.0)); }, "dropout must be in [0, 1)");
  expect_error([&] { LoraLinear(base.ptr(), LoraOptions().dtype(torch::kInt8)); }, "adapter dtype");
  expect_error([&] { LoraLinear(torch::nn::LayerNorm(torch::nn::LayerNormOptions({8})).ptr()); },
               "expected lowbit::lora::Linear4bit, lowbit::lora::Linear8bit or torch::nn::Linear");
  LoraLinear layer(base.ptr());
  expect_error([&] { layer->unmerge(); }, "not merged");
  layer->merge();
  expect_error([&] { layer->merge(); }, "already merged");
}

TEST(ApplyLora, WrapsTargetsFreezesTheRestAndReturnsAdapters) {
  torch::manual_seed(6);
  testing::TinyNet net(32, 48, 10);
  lora::quantize_model(*net, {});
  lora::LoraConfig config;
  config.target_modules = {"fc1", "fc2", "in_proj"};
  config.r = 4;
  const auto trainable = lora::apply_lora(*net, config);
  const auto layers = lora::lora_layers(*net);
  ASSERT_EQ(layers.size(), 3u);
  EXPECT_EQ(layers[0].first, "in_proj");
  EXPECT_EQ(layers[1].first, "mlp.fc1");
  ASSERT_EQ(trainable.size(), 6u);
  std::set<const void*> adapter_params;
  for (const auto& t : trainable) adapter_params.insert(t.unsafeGetTensorImpl());
  for (const auto& p : net->named_parameters()) {
    const bool adapter = adapter_params.count(p.value().unsafeGetTensorImpl()) > 0;
    EXPECT_EQ(p.value().requires_grad(), adapter) << p.key();
    EXPECT_EQ(adapter, p.key().find("lora_") != std::string::npos) << p.key();
  }
  // Training touches only the adapters.
  const torch::Tensor x = torch::randn({4, 32});
  net->forward(x).pow(2).mean().backward();
  for (const auto& t : trainable) EXPECT_TRUE(t.grad().defined());
  EXPECT_FALSE(net->norm->weight.grad().defined());
}

TEST(ApplyLora, RefusesBadConfigsWithoutChangingTheModel) {
  testing::TinyNet net(16, 16, 4);
  lora::LoraConfig config;
  expect_error([&] { lora::apply_lora(*net, config); }, "target_modules is empty");
  config.target_modules = {"attn"};
  expect_error([&] { lora::apply_lora(*net, config); },
               "matched no Linear4bit, Linear8bit or torch::nn::Linear");
  config.target_modules = {"fc1"};
  config.bias = "all";
  expect_error([&] { lora::apply_lora(*net, config); }, "bias \"all\" is not supported");
  for (const auto& p : net->parameters()) EXPECT_TRUE(p.requires_grad());
  config.bias = "none";
  lora::apply_lora(*net, config);
  expect_error([&] { lora::apply_lora(*net, config); }, "already holds LoRA adapters");
}

}  // namespace
}  // namespace lowbit
