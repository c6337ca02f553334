// quantize_model: which layers it replaces (include / skip patterns, PEFT-style
// suffix matching) and in which format (overrides, first match wins), what
// the model computes afterwards, the size and error report, strict patterns,
// and refusals that leave the model untouched.
#include <cstdio>
#include <map>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lora/apply_lora.h"
#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "lora/module_paths.h"
#include "lora/quantize_model.h"
#include "quant/codebook.h"
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
  config.modules_to_not_convert = {"lm_head"};
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
  config.modules_to_not_convert = {"fc2"};
  EXPECT_EQ(lora::quantize_model(*net, config).replaced, (std::vector<std::string>{"mlp.fc1"}));
}

TEST(QuantizeModel, ReleasesTheReplacedWeight) {
  testing::TinyNet net(32, 32, 8);
  // A handle to the weight tensor (not to the module, which would be refused
  // as a stale typed member) sees its storage released.
  const torch::Tensor weight =
      std::dynamic_pointer_cast<torch::nn::LinearImpl>(lora::find_submodule(*net, "in_proj"))->weight;
  lora::quantize_model(*net, {});
  EXPECT_EQ(weight.numel(), 0);
}

TEST(QuantizeModel, RefusesALayerHeldOutsideTheRegistry) {
  testing::TinyNet net(32, 32, 8);
  const auto held = lora::find_submodule(*net, "mlp.fc1");
  expect_error([&] { lora::quantize_model(*net, {}); }, "cannot replace 'mlp.fc1'");
  EXPECT_NE(std::dynamic_pointer_cast<torch::nn::LinearImpl>(lora::find_submodule(*net, "in_proj")),
            nullptr);  // nothing changed
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
  // A non-finite weight in a later layer is found before the first converts.
  testing::TinyNet poisoned(32, 32, 8);
  {
    torch::NoGradGuard no_grad;
    lora::find_submodule(*poisoned, "lm_head")->as<torch::nn::LinearImpl>()->weight[3][5] =
        std::nanf("");
  }
  expect_error([&] { lora::quantize_model(*poisoned, {}); },
               "quantize_model: 'lm_head' has inf or nan in its weight");
  for (const auto& m : poisoned->modules())
    EXPECT_EQ(dynamic_cast<Linear4bitImpl*>(m.get()), nullptr) << "in_proj must stay float";
  lora::LoraConfig lora_config;
  lora_config.target_modules = {"fc1"};
  lora::apply_lora(*net, lora_config);
  expect_error([&] { lora::quantize_model(*net, {}); }, "quantize the base model before apply_lora");
}

// The format each layer ended up in, by its type and state.
std::string format_at(torch::nn::Module& model, const std::string& path) {
  auto m = lora::find_submodule(model, path);
  if (dynamic_cast<lora::Linear8bitImpl*>(m.get())) return "int8";
  if (auto* q = dynamic_cast<Linear4bitImpl*>(m.get()))
    return quant::format_info(q->quant_state().format).name;
  if (dynamic_cast<torch::nn::LinearImpl*>(m.get())) return "float";
  return m->name();
}

TEST(QuantizeModel, MixedConfigGivesEachLayerItsPatternsFormat) {
  torch::manual_seed(7);
  testing::TinyNet net(32, 48, 8);
  QuantizeConfig config;
  config.format = lora::LinearFormat::NF4;
  // First match wins: fc1 takes int8 from the mlp rule, not fp4.
  config.overrides = {{"in_proj", lora::LinearFormat::Int8},
                      {R"(mlp\.fc1)", lora::LinearFormat::Int8},
                      {"fc1", lora::LinearFormat::FP4},
                      {"fc2", lora::LinearFormat::FP4}};
  config.modules_to_not_convert = {"lm_head"};
  config.int8.threshold(6.0);
  const auto report = lora::quantize_model(*net, config);
  EXPECT_EQ(format_at(*net, "in_proj"), "int8");
  EXPECT_EQ(format_at(*net, "mlp.fc1"), "int8");
  EXPECT_EQ(format_at(*net, "mlp.fc2"), "fp4");
  EXPECT_EQ(format_at(*net, "lm_head"), "float");
  auto* in_proj = dynamic_cast<lora::Linear8bitImpl*>(lora::find_submodule(*net, "in_proj").get());
  EXPECT_EQ(in_proj->options().threshold(), 6.0);
  ASSERT_EQ(report.layers.size(), 3u);
  EXPECT_EQ(report.layers[0].format, lora::LinearFormat::Int8);
  EXPECT_EQ(report.layers[2].format, lora::LinearFormat::FP4);
  // "none" leaves a selected layer in float; the rest take the default.
  testing::TinyNet other(32, 48, 8);
  QuantizeConfig keep;
  keep.overrides = {{"fc2", lora::LinearFormat::None}};
  EXPECT_EQ(lora::quantize_model(*other, keep).replaced,
            (std::vector<std::string>{"in_proj", "mlp.fc1", "lm_head"}));
  EXPECT_EQ(format_at(*other, "mlp.fc2"), "float");
  EXPECT_EQ(format_at(*other, "lm_head"), "nf4");
  EXPECT_EQ(lora::parse_linear_format("INT8"), lora::LinearFormat::Int8);
  expect_error([] { lora::parse_linear_format("int4"); },
               "unknown layer format 'int4'; expected nf4, fp4, int8 or none");
}

TEST(QuantizeModel, ReportGivesEachLayersBytesAndError) {
  torch::manual_seed(8);
  testing::TinyNet net(64, 96, 16);
  // Copies of the float weights, to measure the errors independently.
  std::map<std::string, torch::Tensor> original;
  for (const std::string p : {"in_proj", "mlp.fc1", "mlp.fc2", "lm_head"})
    original[p] = lora::find_submodule(*net, p)->as<torch::nn::Linear>()->weight.detach().clone();
  QuantizeConfig config;
  config.overrides = {{"in_proj", lora::LinearFormat::Int8}};
  const auto report = lora::quantize_model(*net, config);
  ASSERT_EQ(report.layers.size(), 4u);
  const lora::LayerReport& int8 = report.layers[0];
  EXPECT_EQ(int8.path, "in_proj");
  // in_proj [96, 64] with bias: float32 before; int8 codes + float32 SCB
  // and the float32 bias after.
  EXPECT_EQ(int8.before.bytes, 4 * (96 * 64 + 96));
  EXPECT_EQ(int8.after.bytes, 96 * 64 + 4 * 96 + 4 * 96);
  EXPECT_EQ(int8.after.params, 96 * 64 + 96);
  EXPECT_DOUBLE_EQ(int8.after.bits_per_param(), 8.0 * (96 * 64 + 8 * 96) / (96 * 64 + 96));
  // lm_head [16, 96], no bias, NF4 block 64 with double quantization:
  // packed codes, 24 absmax codes, one nested absmax + offset, codebooks.
  const lora::LayerReport& head = report.layers[3];
  EXPECT_EQ(head.path, "lm_head");
  EXPECT_EQ(head.after.bytes, 16 * 96 / 2 + 24 + 4 + 4 + 4 * (16 + 256));
  // Errors against the float weights, recomputed here in double.
  for (const lora::LayerReport& l : report.layers) {
    auto m = lora::find_submodule(*net, l.path);
    const torch::Tensor deq =
        l.format == lora::LinearFormat::Int8
            ? m->as<lora::Linear8bitImpl>()->dequantized_weight()
            : m->as<Linear4bitImpl>()->dequantized_weight();
    const torch::Tensor w = original[l.path].to(torch::kFloat64), d = deq.to(torch::kFloat64);
    const double rel = 100.0 * ((w - d).norm() / w.norm()).item<double>();
    const double cosine = ((w * d).sum() / (w.norm() * d.norm())).item<double>();
    EXPECT_NEAR(l.error.relative_percent, rel, 1e-9 * rel) << l.path;
    EXPECT_NEAR(l.error.cosine, cosine, 1e-12) << l.path;
    EXPECT_NEAR(l.error.max_abs, (w - d).abs().max().item<double>(), 1e-12) << l.path;
  }
  // int8 rounds to 1/127 of a row's absmax, NF4 to 1/16 levels of a block's.
  EXPECT_LT(report.layers[0].error.relative_percent, 1.0);
  EXPECT_GT(report.layers[1].error.relative_percent, 5.0);
  int64_t before = 0, after = 0;
  for (const auto& l : report.layers) {
    before += l.before.bytes;
    after += l.after.bytes;
  }
  EXPECT_EQ(report.quantized_before.bytes, before);
  EXPECT_EQ(report.quantized_after.bytes, after);
  EXPECT_DOUBLE_EQ(report.saved_fraction(),
                   1.0 - double(report.after.bytes) / double(report.before.bytes));
  const std::string table = report.to_table();
  std::printf("%s", table.c_str());
  for (const char* needle : {"in_proj", "int8", "mlp.fc1", "nf4", "lm_head", "memory saved"})
    EXPECT_NE(table.find(needle), std::string::npos) << needle;
}

TEST(QuantizeModel, StrictRefusesPatternsThatMatchNothing) {
  testing::TinyNet net(16, 16, 4);
  QuantizeConfig config;
  config.modules_to_not_convert = {"lm_head", "classifier"};
  config.overrides = {{"q_proj", lora::LinearFormat::Int8}};
  QuantizeConfig strict = config;
  strict.strict = true;
  expect_error([&] { lora::quantize_model(*net, strict); },
               "QuantizeConfig::modules_to_not_convert pattern 'classifier' matches no "
               "torch::nn::Linear");
  strict.modules_to_not_convert = {"lm_head"};
  expect_error([&] { lora::quantize_model(*net, strict); },
               "QuantizeConfig::overrides pattern 'q_proj' matches no torch::nn::Linear");
  strict.overrides.clear();
  strict.include = {"fc1", "attention"};
  expect_error([&] { lora::quantize_model(*net, strict); },
               "QuantizeConfig::include pattern 'attention' matches no torch::nn::Linear");
  for (const auto& m : net->modules()) EXPECT_EQ(dynamic_cast<Linear4bitImpl*>(m.get()), nullptr);
  // Without strict the unmatched patterns are ignored.
  EXPECT_EQ(lora::quantize_model(*net, config).replaced.size(), 3u);
}

}  // namespace
}  // namespace lowbit
