// Linear8bit (LLM.int8()): forward against the same int8 arithmetic written
// out here in double, the outlier threshold against float32 on inputs with
// planted outlier columns, gradients, the dequantized cache, bitsandbytes'
// Linear8bitLt entries through safetensors, refusals, and LoRA over it.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lora/apply_lora.h"
#include "lora/linear8bit.h"
#include "lora/module_paths.h"
#include "lora/quantize_model.h"
#include "quant/int8.h"
#include "quant/safetensors.h"
#include "tests/kernels/backends.h"
#include "tests/lora/test_models.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit {
namespace {

using lora::Linear8bit;
using lora::Linear8bitOptions;
using testing::expect_error;

torch::nn::Linear make_linear(int64_t in, int64_t out, bool bias, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

// The result of the layer's arithmetic in double, and the error allowed.
struct Expected {
  torch::Tensor value, bound;  // double [m, out]
};

// LLM.int8() on x [m, in] with the layer's codes and SCB, as
// Backend::gemm_int8 defines it: per row, absmax a and codes
// nearbyint(x * (127 / a)) in float (the definition, so codes agree
// exactly), int8 products summed exactly, then acc * a * SCB / 127^2 in
// double; columns with any |x| >= threshold are zeroed in x and added back
// as x * W_dequantized, also in double. The layer rounds the int32 sum to
// float and multiplies twice in float (factor a / 127^2 included): at most
// ~5 roundings of 2^-24, allowed as 1e-6 of the term; the bias and the
// float outlier product add float rounding of their own magnitudes (at most
// a few dozen terms here: 1e-6 again).
Expected int8_arithmetic(const torch::Tensor& x, const Linear8bit& q, double threshold) {
  const torch::Tensor codes = q->int8_weight().to(torch::kFloat64);
  const torch::Tensor scb = q->scb().to(torch::kFloat64);
  torch::Tensor main = x.clone(), outlier_cols;
  if (threshold > 0) {
    outlier_cols = (x.abs() >= threshold).any(0);
    main.index_put_({torch::indexing::Slice(), outlier_cols}, 0.0f);
  }
  const int64_t m = x.size(0), in = x.size(1);
  torch::Tensor xc = torch::zeros({m, in}, torch::kFloat64),
                a = torch::zeros({m, 1}, torch::kFloat64);
  for (int64_t r = 0; r < m; ++r) {
    const auto row = main[r].contiguous();
    const float* v = row.data_ptr<float>();
    float absmax = 0.0f;
    for (int64_t j = 0; j < in; ++j) absmax = std::max(absmax, std::fabs(v[j]));
    const float inv = absmax > 0.0f ? 127.0f / absmax : 0.0f;
    for (int64_t j = 0; j < in; ++j) xc[r][j] = double(std::nearbyint(v[j] * inv));
    a[r][0] = double(absmax);
  }
  // Sums of <= 96 products of magnitude <= 127^2 are exact in double.
  const torch::Tensor acc = xc.mm(codes.t());
  const torch::Tensor term = acc * a * scb.unsqueeze(0) / 16129.0;
  Expected e;
  e.value = term.clone();
  e.bound = 1e-6 * term.abs() + 1e-30;
  if (outlier_cols.defined() && outlier_cols.any().item<bool>()) {
    const torch::Tensor xo = x.to(torch::kFloat64).index({torch::indexing::Slice(), outlier_cols});
    const torch::Tensor wo =
        (codes * scb.unsqueeze(1) / 127.0).index({torch::indexing::Slice(), outlier_cols});
    e.value = e.value + xo.mm(wo.t());
    e.bound = e.bound + 1e-6 * xo.abs().mm(wo.abs().t());
  }
  if (q->bias.defined()) {
    const torch::Tensor b = q->bias.to(torch::kFloat64).unsqueeze(0);
    e.value = e.value + b;
    e.bound = e.bound + 1e-6 * (e.value.abs() + b.abs());
  }
  return e;
}

void expect_within(const torch::Tensor& got, const Expected& e, const std::string& what) {
  ASSERT_EQ(got.sizes(), e.value.sizes()) << what;
  const torch::Tensor err = (got.to(torch::kFloat64) - e.value).abs();
  EXPECT_LE((err - e.bound).max().item<double>(), 0.0)
      << what << ": max error " << err.max().item<double>() << " exceeds its bound somewhere";
}

TEST(Linear8bit, ForwardIsTheInt8Arithmetic) {
  for (bool bias : {false, true}) {
    auto linear = make_linear(96, 40, bias, 1);
    Linear8bit q(linear);
    auto [codes, scb] = quant::quantize_int8_rowwise(linear->weight.detach());
    EXPECT_TRUE(torch::equal(q->int8_weight(), codes));
    EXPECT_TRUE(torch::equal(q->scb(), scb));
    for (int64_t m : {1, 7, 33}) {
      torch::manual_seed(m);
      torch::Tensor x = torch::randn({m, 96}) * torch::logspace(-2, 1, m).unsqueeze(1);
      if (m > 1) x[1].zero_();  // a zero row: scale 0, output = bias
      const std::string what = "m " + std::to_string(m) + (bias ? " bias" : "");
      expect_within(q->forward(x), int8_arithmetic(x, q, 0.0), what);
    }
  }
}

TEST(Linear8bit, KeepsLeadingDimensionsAndInputDtype) {
  Linear8bit q(make_linear(64, 24, true, 2));
  const torch::Tensor x = torch::randn({2, 3, 64});
  const torch::Tensor y = q->forward(x);
  EXPECT_EQ(y.sizes(), torch::IntArrayRef({2, 3, 24}));
  EXPECT_TRUE(torch::equal(y.reshape({6, 24}), q->forward(x.reshape({6, 64}))));
  const torch::Tensor xb = x.to(torch::kBFloat16);
  const torch::Tensor yb = q->forward(xb);
  EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(yb, q->forward(xb.to(torch::kFloat32)).to(torch::kBFloat16)));
}

// Inputs whose columns 3, 50 and 200 hold a few values of magnitude 20-60
// (LLM.int8()'s emergent outlier features), the rest N(0, 1). Without the
// threshold each row's scale is set by its outlier, so its ordinary values
// lose most of their 8 bits; with threshold 6 those columns go through float.
TEST(Linear8bit, ThresholdKeepsOutlierColumnsInFloat) {
  auto linear = make_linear(256, 64, true, 3);
  torch::manual_seed(30);
  torch::Tensor x = torch::randn({16, 256});
  for (int64_t c : {3, 50, 200})
    for (int64_t r = 0; r < 16; r += 3)
      x[r][c] = (r % 2 ? -1.0f : 1.0f) * (20.0f + 2.5f * float(r));
  const torch::Tensor reference =
      torch::linear(x.to(torch::kFloat64), linear->weight.detach().to(torch::kFloat64),
                    linear->bias.detach().to(torch::kFloat64));
  Linear8bit off(linear), on(linear, Linear8bitOptions().threshold(6.0));
  const torch::Tensor y_off = off->forward(x), y_on = on->forward(x);
  expect_within(y_on, int8_arithmetic(x, on, 6.0), "threshold 6");
  const auto rel = [&](const torch::Tensor& y) {
    return ((y.to(torch::kFloat64) - reference).norm() / reference.norm()).item<double>();
  };
  const double err_off = rel(y_off), err_on = rel(y_on);
  std::printf(
      "relative error against float32 with planted outliers: threshold 0: %.3e, "
      "threshold 6: %.3e (%.1fx smaller)\n",
      err_off, err_on, err_off / err_on);
  // The weight's own int8 error (~0.3% relative) remains in both; the
  // activations' error shrinks by roughly the outliers' magnitude over
  // typical values' (~10x here), so a 3x margin is safe.
  EXPECT_LT(err_on * 3.0, err_off);
  // Inputs without any value at the threshold take the plain int8 path.
  const torch::Tensor calm = torch::randn({4, 256}).clamp(-5.0, 5.0);
  EXPECT_TRUE(torch::equal(on->forward(calm), off->forward(calm)));
}

TEST(Linear8bit, InputAndBiasGradientsAreThoseOfTheDequantizedLinear) {
  for (double threshold : {0.0, 6.0}) {
    Linear8bit q(make_linear(80, 30, true, 4), Linear8bitOptions().threshold(threshold));
    q->bias.set_requires_grad(true);
    torch::manual_seed(40);
    torch::Tensor x = torch::randn({2, 5, 80});
    x[0][1][7] = 30.0f;  // an outlier column when the threshold is on
    const torch::Tensor dy = torch::randn({2, 5, 30});
    const torch::Tensor x1 = x.clone().requires_grad_(true);
    (q->forward(x1) * dy).sum().backward();
    const torch::Tensor x2 = x.clone().requires_grad_(true);
    const torch::Tensor b2 = q->bias.detach().clone().requires_grad_(true);
    (torch::linear(x2, q->dequantized_weight(), b2) * dy).sum().backward();
    // Both are dy W with the same float32 W (one mm each, in the same
    // order): equal up to the mm's own rounding, 1e-6 relative at most.
    EXPECT_TRUE(torch::allclose(x1.grad(), x2.grad(), 1e-6, 1e-6)) << "threshold " << threshold;
    EXPECT_TRUE(torch::allclose(q->bias.grad(), b2.grad(), 1e-6, 1e-6));
  }
  // The weight is frozen: no parameter of the layer but the bias.
  Linear8bit q(make_linear(8, 4, true, 5));
  EXPECT_EQ(q->parameters().size(), 1u);
}

TEST(Linear8bit, CacheRunsTheDequantizedWeightInFloat) {
  auto linear = make_linear(64, 48, true, 6);
  Linear8bit q(linear, Linear8bitOptions().use_cache(true));
  EXPECT_EQ(q->cache_bytes(), 0);
  const torch::Tensor x = torch::randn({5, 64});
  const torch::Tensor y = q->forward(x);
  EXPECT_EQ(q->cache_bytes(), 64 * 48 * 4);
  EXPECT_TRUE(torch::equal(y, torch::linear(x, q->dequantized_weight(), q->bias)));
  q->clear_cache();
  EXPECT_EQ(q->cache_bytes(), 0);
  EXPECT_TRUE(torch::equal(q->forward(x), y));  // rebuilt on demand
  // Storage counts the codes and SCB; the cache is reported apart.
  EXPECT_EQ(q->storage().total_bytes(), 64 * 48 + 48 * 4);
  EXPECT_DOUBLE_EQ(q->storage().payload_bits_per_param(), 8.0 + 32.0 / 64);
  // model_size counts the cache while it is held.
  const int64_t with_cache = lora::model_size(*q).bytes;
  q->clear_cache();
  EXPECT_EQ(with_cache - lora::model_size(*q).bytes, 64 * 48 * 4);
}

class Linear8bitFiles : public ::testing::Test {
 protected:
  testing::ScratchDir scratch_;
  std::string path_ = scratch_.file("int8.safetensors");
};

TEST_F(Linear8bitFiles, BitsandbytesEntriesRoundTripThroughSafetensors) {
  Linear8bit q(make_linear(40, 24, true, 7));
  const quant::StateDict sd = q->bnb_state_dict("model.proj.");
  ASSERT_EQ(sd.size(), 4u);
  EXPECT_EQ(sd.at("model.proj.weight").scalar_type(), torch::kInt8);
  EXPECT_EQ(sd.at("model.proj.weight").sizes(), torch::IntArrayRef({24, 40}));
  EXPECT_EQ(sd.at("model.proj.SCB").scalar_type(), torch::kFloat32);
  EXPECT_EQ(sd.at("model.proj.SCB").sizes(), torch::IntArrayRef({24}));
  // bitsandbytes writes torch.tensor(0, dtype=torch.uint8): "row".
  EXPECT_EQ(sd.at("model.proj.weight_format").scalar_type(), torch::kUInt8);
  EXPECT_EQ(sd.at("model.proj.weight_format").dim(), 0);
  EXPECT_EQ(sd.at("model.proj.weight_format").item<int>(), 0);
  quant::save_safetensors(path_, sd);
  const auto file = quant::load_safetensors(path_);
  Linear8bit back = lora::linear8bit_from_bnb(file.tensors, "model.proj.", path_);
  EXPECT_TRUE(torch::equal(back->int8_weight(), q->int8_weight()));
  EXPECT_TRUE(torch::equal(back->scb(), q->scb()));
  EXPECT_TRUE(torch::equal(back->bias, q->bias));
  const torch::Tensor x = torch::randn({3, 40});
  EXPECT_TRUE(torch::equal(back->forward(x), q->forward(x)));
}

// Entries laid out by hand as bitsandbytes documents them, and what goes wrong.
TEST_F(Linear8bitFiles, RefusesWrongEntriesNamingTheTensor) {
  const torch::Tensor codes = torch::randint(-127, 128, {6, 10}, torch::kInt8);
  const torch::Tensor scb = torch::rand({6}) + 0.5;
  quant::StateDict sd = {{"l.weight", codes}, {"l.SCB", scb}};
  Linear8bit plain = lora::linear8bit_from_bnb(sd, "l.", "file");  // no weight_format: "row"
  EXPECT_TRUE(torch::equal(plain->int8_weight(), codes));
  EXPECT_FALSE(plain->bias.defined());
  auto with = [&](const std::string& key, const torch::Tensor& t) {
    quant::StateDict s = sd;
    s[key] = t;
    return s;
  };
  expect_error(
      [&] {
        lora::linear8bit_from_bnb(with("l.weight_format", torch::tensor(2, torch::kUInt8)), "l.",
                                  "f.st");
      },
      "f.st: 'l.weight_format' is 2 (\"col_turing\"), a tiled GPU layout");
  expect_error(
      [&] {
        lora::linear8bit_from_bnb(with("l.weight_format", torch::tensor(7, torch::kUInt8)), "l.",
                                  "f.st");
      },
      "an unknown weight format");
  expect_error(
      [&] { lora::linear8bit_from_bnb(with("l.SCB", scb.to(torch::kFloat16)), "l.", "f.st"); },
      "tensor 'l.SCB' is Half [6]; expected float32 [6]");
  expect_error([&] { lora::linear8bit_from_bnb(with("l.SCB", torch::ones({5})), "l.", "f.st"); },
               "tensor 'l.SCB' is Float [5]; expected float32 [6]");
  expect_error(
      [&] { lora::linear8bit_from_bnb(with("l.weight", codes.to(torch::kFloat32)), "l.", "f.st"); },
      "tensor 'l.weight' is Float [6, 10]; an int8 weight is int8");
  expect_error([&] { lora::linear8bit_from_bnb(with("l.SCB", -scb), "l.", "f.st"); },
               "'l.SCB' holds negative or non-finite scales");
  quant::StateDict no_scb = {{"l.weight", codes}};
  expect_error([&] { lora::linear8bit_from_bnb(no_scb, "l.", "f.st"); }, "missing tensor 'l.SCB'");
  expect_error([&] { lora::linear8bit_from_bnb(with("l.bias", torch::ones({5})), "l.", "f.st"); },
               "Linear8bit: bias has shape [5]; expected [6]");
}

TEST(Linear8bit, RefusesBadInputs) {
  Linear8bit q(make_linear(16, 8, false, 8));
  expect_error([&] { q->forward(torch::randn({2, 15})); }, "expected [..., 16]");
  expect_error([&] { q->forward(torch::ones({2, 16}, torch::kInt32)); }, "expected float32");
  expect_error([&] { Linear8bit(make_linear(4, 4, false, 1), Linear8bitOptions().threshold(-1)); },
               "threshold must be >= 0");
  expect_error(
      [&] {
        Linear8bit(torch::randn({4, 4}), torch::ones({4}), torch::Tensor());
      },
      "the weight must be int8 [out_features, in_features], got Float [4, 4]");
  expect_error(
      [&] {
        q->set_quantized_weight(torch::zeros({8, 8}, torch::kInt8), torch::ones({8}));
      },
      "the new weight has shape [8, 8]; this layer is [8, 16]");
}

// The OpenCL gemm_int8 follows the same contract as the CPU's: the layer's
// outputs agree bit for bit, outlier columns (threshold) included.
TEST(Linear8bit, OpenClMatchesTheCpuBitForBit) {
  auto cl = testing::opencl_or_null();
  if (!cl) GTEST_SKIP() << "no OpenCL device";
  for (double threshold : {0.0, 6.0}) {
    const torch::nn::Linear linear = make_linear(100, 37, true, 9);
    Linear8bit on_cpu(linear, Linear8bitOptions().threshold(threshold));
    Linear8bit on_cl(linear, Linear8bitOptions().threshold(threshold).backend(cl));
    torch::manual_seed(12);
    torch::Tensor x = torch::randn({5, 100});
    x.index_put_({torch::indexing::Slice(), 3}, 9.0);  // an outlier column
    EXPECT_TRUE(torch::equal(on_cl->forward(x), on_cpu->forward(x))) << "threshold " << threshold;
  }
}

// An int8 base under LoRA: the adapter trains (its gradients are those of
// the same adapter over a float Linear holding the dequantized weight), and
// merge / unmerge requantize and restore the base.
TEST(Linear8bit, ServesAsALoraBase) {
  torch::manual_seed(10);
  testing::TinyNet net(32, 48, 10);
  lora::QuantizeConfig q;
  q.format = lora::LinearFormat::Int8;
  q.modules_to_not_convert = {"lm_head"};
  lora::quantize_model(*net, q);
  auto* base = dynamic_cast<lora::Linear8bitImpl*>(lora::find_submodule(*net, "mlp.fc1").get());
  ASSERT_NE(base, nullptr);
  lora::LoraConfig config;
  config.target_modules = {"fc1"};
  config.dtype = torch::kFloat32;
  const auto trainable = lora::apply_lora(*net, config);
  ASSERT_EQ(trainable.size(), 2u);
  auto adapter = lora::lora_layers(*net).at(0).second;
  {
    torch::NoGradGuard no_grad;
    adapter->lora_B.normal_();
  }
  const torch::Tensor x = torch::randn({4, 48});
  const torch::Tensor dy = torch::randn({4, 99});
  (adapter->forward(x) * dy).sum().backward();
  // The same adapter on a float base holding the dequantized weight.
  torch::nn::Linear dense(48, 99);
  {
    torch::NoGradGuard no_grad;
    dense->weight.copy_(base->dequantized_weight());
    dense->bias.copy_(base->bias);
  }
  lora::LoraLinear twin(dense.ptr(), config.layer_options());
  {
    torch::NoGradGuard no_grad;
    twin->lora_A.copy_(adapter->lora_A);
    twin->lora_B.copy_(adapter->lora_B);
  }
  (twin->forward(x) * dy).sum().backward();
  // lora_B's gradient is dy^T (scaling A x): the base does not enter it;
  // lora_A's passes through B only. Equal up to float rounding.
  EXPECT_TRUE(torch::allclose(adapter->lora_A.grad(), twin->lora_A.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(adapter->lora_B.grad(), twin->lora_B.grad(), 1e-5, 1e-6));

  torch::NoGradGuard no_grad;
  const torch::Tensor codes = base->int8_weight().clone();
  const torch::Tensor before = adapter->forward(x);
  adapter->merge();
  EXPECT_FALSE(torch::equal(base->int8_weight(), codes));
  // Merged, the update lives in the requantized weight and passes through
  // the int8 product too: rounding noise of a step / sqrt(12) per weight and
  // per input (steps absmax / 127 at absmax ~3 sigma: ~0.7% each), ~1-2% of
  // the output's norm together; 3% allowed.
  const double drift = ((adapter->forward(x) - before).norm() / before.norm()).item<double>();
  EXPECT_LT(drift, 0.03);
  adapter->unmerge();
  EXPECT_TRUE(torch::equal(base->int8_weight(), codes));
  EXPECT_TRUE(torch::equal(adapter->forward(x), before));
}

}  // namespace
}  // namespace lowbit
