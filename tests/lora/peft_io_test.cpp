// PEFT adapter files: key names, shapes, dtypes and config fields as PEFT
// writes them, a bit-exact round trip, a file written the way PEFT writes it,
// and refusals (rank / shape mismatch, unknown module, unsupported options).
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "lora/apply_lora.h"
#include "lora/peft_io.h"
#include "lora/quantize_model.h"
#include "quant/safetensors.h"
#include "tests/lora/test_models.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit {
namespace {

using testing::expect_error;

using nlohmann::json;

class PeftIo : public ::testing::Test {
 protected:
  // A quantized TinyNet with trained-looking (random) adapters.
  testing::TinyNet adapted(const lora::LoraConfig& config, uint64_t seed) {
    torch::manual_seed(seed);
    testing::TinyNet net(32, 48, 10);
    lora::QuantizeConfig q;
    q.modules_to_not_convert = {"lm_head"};
    lora::quantize_model(*net, q);
    lora::apply_lora(*net, config);
    torch::NoGradGuard no_grad;
    for (auto& [path, layer] : lora::lora_layers(*net)) {
      layer->lora_A.normal_();
      layer->lora_B.normal_();
    }
    return net;
  }

  static lora::LoraConfig config() {
    lora::LoraConfig c;
    c.r = 4;
    c.lora_alpha = 16;
    c.lora_dropout = 0.05;
    c.target_modules = {"fc1", "fc2", "lm_head"};
    c.base_model_name_or_path = "lowbit/tiny-net";
    return c;
  }

  testing::ScratchDir scratch_;  // declared first: dir_ is built from it
  std::string dir() const { return scratch_.file("adapter"); }
  std::filesystem::path dir_{dir()};
};

TEST_F(PeftIo, WritesPeftKeysShapesDtypesAndConfig) {
  testing::TinyNet net = adapted(config(), 1);
  lora::save_adapter(*net, dir(), config());
  const auto file = quant::load_safetensors((dir_ / "adapter_model.safetensors").string());
  std::vector<std::string> keys;
  for (const auto& [key, t] : file.tensors) keys.push_back(key);
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "base_model.model.lm_head.lora_A.weight", "base_model.model.lm_head.lora_B.weight",
                      "base_model.model.mlp.fc1.lora_A.weight", "base_model.model.mlp.fc1.lora_B.weight",
                      "base_model.model.mlp.fc2.lora_A.weight", "base_model.model.mlp.fc2.lora_B.weight"}));
  // TinyNet(32, 48, 10): fc1 48 -> 99, fc2 99 -> 48, lm_head 48 -> 10; A [r, in], B [out, r].
  EXPECT_EQ(file.tensors.at("base_model.model.mlp.fc1.lora_A.weight").sizes(), (std::vector<int64_t>{4, 48}));
  EXPECT_EQ(file.tensors.at("base_model.model.mlp.fc1.lora_B.weight").sizes(), (std::vector<int64_t>{99, 4}));
  EXPECT_EQ(file.tensors.at("base_model.model.lm_head.lora_B.weight").sizes(), (std::vector<int64_t>{10, 4}));
  for (const auto& [key, t] : file.tensors) EXPECT_EQ(t.scalar_type(), torch::kFloat16) << key;
  EXPECT_EQ(file.metadata.at("format"), "pt");

  std::ifstream in(dir_ / "adapter_config.json");
  const json j = json::parse(in);
  EXPECT_EQ(j.at("peft_type"), "LORA");
  EXPECT_EQ(j.at("r"), 4);
  EXPECT_TRUE(j.at("lora_alpha").is_number_integer());  // PEFT writes an int alpha as an int
  EXPECT_EQ(j.at("lora_alpha"), 16);
  EXPECT_EQ(j.at("target_modules"), json({"fc1", "fc2", "lm_head"}));
  EXPECT_DOUBLE_EQ(j.at("lora_dropout").get<double>(), 0.05);
  EXPECT_EQ(j.at("bias"), "none");
  EXPECT_EQ(j.at("use_rslora"), false);
  EXPECT_EQ(j.at("fan_in_fan_out"), false);
  EXPECT_EQ(j.at("task_type"), "CAUSAL_LM");
  EXPECT_EQ(j.at("base_model_name_or_path"), "lowbit/tiny-net");
}

TEST_F(PeftIo, RoundTripIsBitExact) {
  testing::TinyNet net = adapted(config(), 2);
  lora::save_adapter(*net, dir(), config());
  const torch::Tensor x = torch::randn({3, 32});
  net->eval();  // no adapter dropout (lora_dropout = 0.05)
  const torch::Tensor y = net->forward(x);

  // PEFT's from_pretrained path: a fresh base (same seed: same weights) gets
  // its adapters from the files.
  torch::manual_seed(2);
  testing::TinyNet fresh(32, 48, 10);
  lora::QuantizeConfig q;
  q.modules_to_not_convert = {"lm_head"};
  lora::quantize_model(*fresh, q);
  const auto trainable = lora::load_adapter(*fresh, dir());
  EXPECT_EQ(trainable.size(), 6u);
  const auto a = lora::lora_layers(*net), b = lora::lora_layers(*fresh);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(torch::equal(a[i].second->lora_A, b[i].second->lora_A)) << a[i].first;
    EXPECT_TRUE(torch::equal(a[i].second->lora_B, b[i].second->lora_B)) << a[i].first;
    EXPECT_EQ(b[i].second->scaling(), 4.0);
  }
  fresh->eval();
  EXPECT_TRUE(torch::equal(fresh->forward(x), y));

  // Into adapters that apply_lora already created.
  testing::TinyNet prepared = adapted(config(), 3);
  lora::load_adapter_weights(*prepared, dir());
  for (const auto& [path, layer] : lora::lora_layers(*prepared))
    for (const auto& [p2, l2] : a)
      if (p2 == path) {
        EXPECT_TRUE(torch::equal(layer->lora_A, l2->lora_A)) << path;
      }
}

// save_adapter without a config: the one the adapters carry, with
// target_modules that select exactly the adapted layers.
TEST_F(PeftIo, RecoversTheConfigFromTheAdapters) {
  testing::TinyNet net = adapted(config(), 7);
  const lora::LoraConfig c = lora::adapter_config(*net);
  EXPECT_EQ(c.r, 4);
  EXPECT_EQ(c.lora_alpha, 16.0);
  EXPECT_EQ(c.lora_dropout, 0.05);
  EXPECT_FALSE(c.use_rslora);
  EXPECT_EQ(c.dtype, torch::kFloat16);
  EXPECT_EQ(c.target_modules, (std::vector<std::string>{"fc1", "fc2", "lm_head"}));
  lora::save_adapter(*net, dir());
  std::ifstream in(dir_ / "adapter_config.json");
  const json j = json::parse(in);
  EXPECT_EQ(j.at("r"), 4);
  EXPECT_EQ(j.at("lora_alpha"), 16);
  EXPECT_DOUBLE_EQ(j.at("lora_dropout").get<double>(), 0.05);
  EXPECT_EQ(j.at("target_modules"), json({"fc1", "fc2", "lm_head"}));
  net->eval();
  const torch::Tensor x = torch::randn({2, 32});
  torch::manual_seed(7);
  testing::TinyNet fresh(32, 48, 10);
  lora::QuantizeConfig q;
  q.modules_to_not_convert = {"lm_head"};
  lora::quantize_model(*fresh, q);
  lora::load_adapter(*fresh, dir());
  fresh->eval();
  EXPECT_TRUE(torch::equal(fresh->forward(x), net->forward(x)));

  // Adapting one of two layers that share a name records its full path.
  struct TwinsImpl : torch::nn::Module {
    TwinsImpl() {
      register_module("a", testing::Mlp(8, 8));
      register_module("b", testing::Mlp(8, 8));
    }
  };
  auto twins = std::make_shared<TwinsImpl>();
  lora::LoraConfig one = config();
  one.target_modules = {R"(a\.fc1)"};
  lora::apply_lora(*twins, one);
  EXPECT_EQ(lora::adapter_config(*twins).target_modules, (std::vector<std::string>{R"(a\.fc1)"}));
  lora::save_adapter(*twins, dir());
  auto reloaded = std::make_shared<TwinsImpl>();
  lora::load_adapter(*reloaded, dir());
  ASSERT_EQ(lora::lora_layers(*reloaded).size(), 1u);
  EXPECT_EQ(lora::lora_layers(*reloaded)[0].first, "a.fc1");
}

TEST_F(PeftIo, LoadsAFileWrittenTheWayPeftWritesIt) {
  // Float32 tensors, a float alpha, extra fields of newer PEFT versions.
  std::filesystem::create_directories(dir_);
  torch::manual_seed(4);
  const torch::Tensor a = torch::randn({2, 48}), b = torch::randn({99, 2});
  quant::save_safetensors((dir_ / "adapter_model.safetensors").string(),
                          {{"base_model.model.mlp.fc1.lora_A.weight", a},
                           {"base_model.model.mlp.fc1.lora_B.weight", b}});
  std::ofstream(dir_ / "adapter_config.json") << R"({
    "alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": null, "bias": "none",
    "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
    "layers_pattern": null, "layers_to_transform": null, "loftq_config": {}, "lora_alpha": 8.0,
    "lora_dropout": 0.0, "megatron_config": null, "megatron_core": "megatron.core",
    "modules_to_save": null, "peft_type": "LORA", "r": 2, "rank_pattern": {}, "revision": null,
    "target_modules": ["fc1"], "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false})";
  torch::manual_seed(5);
  testing::TinyNet net(32, 48, 10);
  lora::load_adapter(*net, dir());
  const auto layers = lora::lora_layers(*net);
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].first, "mlp.fc1");
  EXPECT_EQ(layers[0].second->lora_A.scalar_type(), torch::kFloat32);  // the file's dtype is kept
  EXPECT_TRUE(torch::equal(layers[0].second->lora_A, a));
  EXPECT_TRUE(torch::equal(layers[0].second->lora_B, b));
  EXPECT_DOUBLE_EQ(layers[0].second->scaling(), 4.0);
}

TEST_F(PeftIo, RefusesMismatchesAndUnknownModules) {
  testing::TinyNet net = adapted(config(), 6);
  lora::save_adapter(*net, dir(), config());

  lora::LoraConfig rank8 = config();
  rank8.r = 8;
  testing::TinyNet other_rank = adapted(rank8, 7);
  expect_error([&] { lora::load_adapter_weights(*other_rank, dir()); },
               "rank mismatch: lora_A is [4, 48] and lora_B is [99, 4] but the adapter rank r is 8");

  testing::TinyNet wider(32, 64, 10);  // fc1 takes 64 features, the file's A has 48
  expect_error([&] { lora::load_adapter(*wider, dir()); }, "but the layer has 64 input features");

  // A key for a module the model does not have.
  auto file = quant::load_safetensors((dir_ / "adapter_model.safetensors").string());
  file.tensors["base_model.model.mlp.fc3.lora_A.weight"] = file.tensors.at("base_model.model.mlp.fc1.lora_A.weight");
  file.tensors["base_model.model.mlp.fc3.lora_B.weight"] = file.tensors.at("base_model.model.mlp.fc1.lora_B.weight");
  quant::save_safetensors((dir_ / "adapter_model.safetensors").string(), file.tensors);
  testing::TinyNet plain(32, 48, 10);
  expect_error([&] { lora::load_adapter(*plain, dir()); }, "unknown module 'mlp.fc3'");
  expect_error([&] { lora::load_adapter_weights(*net, dir()); }, "unknown module 'mlp.fc3'");
  EXPECT_TRUE(lora::lora_layers(*plain).empty()) << "a refused load changes nothing";

  // A PEFT option this library does not implement.
  std::ifstream in(dir_ / "adapter_config.json");
  json j = json::parse(in);
  j["fan_in_fan_out"] = true;
  std::ofstream(dir_ / "adapter_config.json") << j.dump();
  expect_error([&] { lora::load_adapter_config(dir()); }, "'fan_in_fan_out' is true; only false");
  j["fan_in_fan_out"] = false;
  j["peft_type"] = "IA3";
  std::ofstream(dir_ / "adapter_config.json") << j.dump();
  expect_error([&] { lora::load_adapter_config(dir()); }, "peft_type is \"IA3\"; expected \"LORA\"");
}

}  // namespace
}  // namespace lowbit
