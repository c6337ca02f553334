// quantize_model: which layers it replaces (include / skip patterns, PEFT-style
// suffix matching), what the model computes afterwards, the size report, and
// refusals that leave the model untouched.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lora/apply_lora.h"
#include "lora/linear4bit.h"
#include "lora/module_paths.h"
#include "lora/quantize_model.h"
#include "tests/lora/test_models.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using testing::expect_error;

using lora::Linear4bitImpl;
using lora::QuantizeConfig;

bool is_4bit(torch::nn::Module& model, const std::string& path) {
  return dynamic_cast<Linear4bitImpl*>(lora::find_submodule(model, path).get()) != nullptr;
}

TEST(QuantizeModel, ReplacesSelectedLinearsAndKeepsSkippedOnes) {
  torch::manual_seed(0);
  testing::TinyNet net(64, 96, 40);
  QuantizeConfig config;
  config.skip = {"lm_head"};
  const auto report = lora::quantize_model(*net, config);
  EXPECT_EQ(report.replaced, (std::vector<std::string>{"in_proj", "mlp.fc1", "mlp.fc2"}));
  EXPECT_TRUE(is_4bit(*net, "in_proj"));
  EXPECT_TRUE(is_4bit(*net, "mlp.fc1"));
  EXPECT_TRUE(is_4bit(*net, "mlp.fc2"));
  EXPECT_FALSE(is_4bit(*net, "lm_head"));
  // Frozen 4-bit weights are buffers, not parameters.
  for (const auto& p : net->named_parameters())
    EXPECT_EQ(p.key().find(".weight") != std::string::npos && p.key().rfind("lm_head", 0) != 0 &&
                  p.key().rfind("norm", 0) != 0,
              false)
        << p.key();
}

TEST(QuantizeModel, QuantizedModelComputesWithTheDequantizedWeights) {
  torch::manual_seed(1);
  testing::TinyNet net(64, 96, 40);
  const torch::Tensor x = torch::randn({5, 64});
  lora::quantize_model(*net, {});
  // The same network written out with torch::linear on each layer's
  // dequantized weight (layer norm and gelu as the model has them).
  auto lin = [&](const std::string& path, const torch::Tensor& h) {
    auto* q = dynamic_cast<Linear4bitImpl*>(lora::find_submodule(*net, path).get());
    return torch::linear(h, q->dequantized_weight(), q->bias);
  };
  torch::Tensor h = net->norm(lin("in_proj", x));
  h = h + lin("mlp.fc2", torch::gelu(lin("mlp.fc1", h)));
  const torch::Tensor expected = lin("lm_head", h);
  // Float32 rounding through three matmuls of <= 195 terms: relative 1e-5 of
  // typical magnitudes ~1 is generous, a wrong weight would be off by ~0.1.
  EXPECT_TRUE(torch::allclose(net->forward(x), expected, 1e-4, 1e-4));
}

TEST(QuantizeModel, ReportsSizeBeforeAndAfter) {
  torch::manual_seed(2);
  testing::TinyNet net(256, 256, 64);
  int64_t params = 0;
  for (const auto& p : net->parameters()) params += p.numel();
  QuantizeConfig config;
  config.include = {"fc1", "fc2"};  // plain names match as path suffixes
  const auto report = lora::quantize_model(*net, config);
  EXPECT_EQ(report.replaced, (std::vector<std::string>{"mlp.fc1", "mlp.fc2"}));
  EXPECT_EQ(report.before.params, params);
  EXPECT_EQ(report.before.bytes, 4 * params);
  EXPECT_DOUBLE_EQ(report.before.bits_per_param(), 32.0);
  EXPECT_EQ(report.after.params, params);  // a 4-bit weight still counts out*in parameters
  // fc1 and fc2: 2 * 256 * 515 weights at 4 bits + absmax codes (1 byte per
  // 64) + nested absmax (4 bytes per 256 blocks) + offset + codebooks
  // (16 + 256 floats), plus their float32 biases.
  const int64_t n = 256 * 515;
  const int64_t blocks = (n + 63) / 64;
  const int64_t per_layer = n / 2 + blocks + 4 * ((blocks + 255) / 256) + 4 + 4 * (16 + 256);
  EXPECT_EQ(report.quantized_after.bytes, 2 * per_layer + 4 * (515 + 256));
  EXPECT_EQ(report.quantized_before.bytes, 4 * (2 * n + 515 + 256));
  EXPECT_EQ(report.after.bytes, report.before.bytes - report.quantized_before.bytes +
                                    report.quantized_after.bytes);
  EXPECT_LT(report.after.bits_per_param(), report.before.bits_per_param());
  EXPECT_NE(report.to_string().find("quantized 2 linear layers"), std::string::npos);
}

TEST(QuantizeModel, RegexPatternsSelectByPath) {
  torch::manual_seed(3);
  testing::TinyNet net(32, 32, 8);
  QuantizeConfig config;
  config.include = {R"(mlp\..*)"};
  config.skip = {"fc2"};
  EXPECT_EQ(lora::quantize_model(*net, config).replaced, (std::vector<std::string>{"mlp.fc1"}));
}

TEST(QuantizeModel, ReleasesTheReplacedWeight) {
  testing::TinyNet net(32, 32, 8);
  auto old = std::dynamic_pointer_cast<torch::nn::LinearImpl>(lora::find_submodule(*net, "in_proj"));
  lora::quantize_model(*net, {});
  EXPECT_EQ(old->weight.numel(), 0);  // a stale caller fails instead of running fp32
  EXPECT_THROW(old->forward(torch::randn({2, 32})), c10::Error);
}

// Linears inside a Sequential: its forward runs a private list, so swapping
// the registry entry would not take effect.
struct WithSequentialImpl : torch::nn::Module {
  WithSequentialImpl() {
    register_module("proj", torch::nn::Linear(16, 16));
    register_module("stack", torch::nn::Sequential(torch::nn::Linear(16, 16)));
  }
};
TORCH_MODULE(WithSequential);

TEST(QuantizeModel, RefusalsLeaveTheModelUnchanged) {
  testing::TinyNet net(32, 32, 8);
  QuantizeConfig bad_regex;
  bad_regex.include = {"fc[1"};
  expect_error([&] { lora::quantize_model(*net, bad_regex); },
               "QuantizeConfig::include: 'fc[1' is not a valid regular expression");
  QuantizeConfig nothing;
  nothing.include = {"attention"};
  expect_error([&] { lora::quantize_model(*net, nothing); }, "no torch::nn::Linear matches");
  WithSequential seq;
  expect_error([&] { lora::quantize_model(*seq, {}); },
               "cannot replace 'stack.0': its parent is a torch::nn::Sequential");
  EXPECT_FALSE(is_4bit(*seq, "proj")) << "nothing may change when a target is refused";
  for (const auto& m : net->modules()) EXPECT_EQ(dynamic_cast<Linear4bitImpl*>(m.get()), nullptr);
  lora::LoraConfig lora_config;
  lora_config.target_modules = {"fc1"};
  lora::apply_lora(*net, lora_config);
  expect_error([&] { lora::quantize_model(*net, {}); }, "quantize the base model before apply_lora");
}

}  // namespace
}  // namespace lowbit
