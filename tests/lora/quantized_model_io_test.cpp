// Quantized models in bitsandbytes' state_dict layouts (4-bit and int8): the
// entries and their dtypes, bit-exact round trips of uniform and mixed models
// into an unquantized model, files laid out by hand from bitsandbytes'
// documented formats, the record of layer formats, and refusals.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "lora/apply_lora.h"
#include "lora/module_paths.h"
#include "lora/quantize_model.h"
#include "lora/quantized_model_io.h"
#include "quant/codebook.h"
#include "quant/int8.h"
#include "quant/quantize.h"
#include "quant/safetensors.h"
#include "tests/lora/test_models.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit {
namespace {

using testing::expect_error;

class QuantizedModelIo : public ::testing::Test {
 protected:
  testing::ScratchDir scratch_;  // declared first: path_ lies inside it
  std::string path_ = scratch_.file("model.safetensors");
};

// A TinyNet converted by `q` (NF4 by default), lm_head kept in float.
testing::TinyNet quantized_net(uint64_t seed, lora::QuantizeConfig q = {}) {
  torch::manual_seed(seed);
  testing::TinyNet net(32, 48, 10);
  q.modules_to_not_convert = {"lm_head"};
  lora::quantize_model(*net, q);
  return net;
}

TEST_F(QuantizedModelIo, WritesBitsandbytesEntries) {
  testing::TinyNet net = quantized_net(1);
  lora::save_quantized_model(*net, path_);
  const auto file = quant::load_safetensors(path_);
  const auto& t = file.tensors;
  // mlp.fc1: 99 x 48 = 4752 weights, 75 blocks of 64, double quantized.
  EXPECT_EQ(t.at("mlp.fc1.weight").scalar_type(), torch::kUInt8);
  EXPECT_EQ(t.at("mlp.fc1.weight").sizes(), (std::vector<int64_t>{2376, 1}));
  EXPECT_EQ(t.at("mlp.fc1.weight.absmax").scalar_type(), torch::kUInt8);
  EXPECT_EQ(t.at("mlp.fc1.weight.absmax").numel(), 75);
  EXPECT_EQ(t.at("mlp.fc1.weight.quant_map").numel(), 16);
  EXPECT_EQ(t.at("mlp.fc1.weight.nested_absmax").scalar_type(), torch::kFloat32);
  EXPECT_EQ(t.at("mlp.fc1.weight.nested_absmax").numel(), 1);
  EXPECT_EQ(t.at("mlp.fc1.weight.nested_quant_map").numel(), 256);
  EXPECT_EQ(t.at("mlp.fc1.bias").scalar_type(), torch::kFloat32);
  const torch::Tensor js = t.at("mlp.fc1.weight.quant_state.bitsandbytes__nf4");
  const auto j = nlohmann::json::parse(std::string(static_cast<const char*>(js.data_ptr()), js.numel()));
  EXPECT_EQ(j.at("quant_type"), "nf4");
  EXPECT_EQ(j.at("blocksize"), 64);
  EXPECT_EQ(j.at("shape"), nlohmann::json({99, 48}));
  EXPECT_EQ(j.at("nested_blocksize"), 256);
  // Unquantized tensors under their own names; no internal buffer names leak.
  EXPECT_EQ(t.at("lm_head.weight").scalar_type(), torch::kFloat32);
  EXPECT_TRUE(t.count("norm.weight"));
  for (const auto& [key, tensor] : t) EXPECT_EQ(key.find("weight_absmax"), std::string::npos) << key;
}

TEST_F(QuantizedModelIo, RoundTripIntoAnUnquantizedModelIsBitExact) {
  testing::TinyNet net = quantized_net(2);
  lora::save_quantized_model(*net, path_);
  torch::manual_seed(99);  // different weights everywhere
  testing::TinyNet fresh(32, 48, 10);
  lora::load_quantized_model(*fresh, path_);
  for (const std::string p : {"in_proj", "mlp.fc1", "mlp.fc2"}) {
    auto* a = dynamic_cast<lora::Linear4bitImpl*>(lora::find_submodule(*net, p).get());
    auto* b = dynamic_cast<lora::Linear4bitImpl*>(lora::find_submodule(*fresh, p).get());
    ASSERT_NE(b, nullptr) << p << " became a Linear4bit";
    EXPECT_TRUE(torch::equal(a->packed_weight(), b->packed_weight())) << p;
    EXPECT_TRUE(torch::equal(a->bias, b->bias)) << p;
  }
  const torch::Tensor x = torch::randn({4, 32});
  EXPECT_TRUE(torch::equal(net->forward(x), fresh->forward(x)));
  // Loading again into the now quantized model updates it in place.
  testing::TinyNet other = quantized_net(3);
  lora::load_quantized_model(*other, path_);
  EXPECT_TRUE(torch::equal(net->forward(x), other->forward(x)));
}

TEST_F(QuantizedModelIo, LoraBaseIsSavedUnderTheWrappedLayersPath) {
  testing::TinyNet net = quantized_net(4);
  lora::LoraConfig config;
  config.target_modules = {"fc1"};
  lora::apply_lora(*net, config);
  lora::save_quantized_model(*net, path_);
  const auto file = quant::load_safetensors(path_);
  EXPECT_TRUE(file.tensors.count("mlp.fc1.weight"));
  for (const auto& [key, t] : file.tensors) {
    EXPECT_EQ(key.find("base_layer"), std::string::npos) << key;
    EXPECT_EQ(key.find("lora_"), std::string::npos) << key;
  }
}

// The layout written from bitsandbytes' documentation (DESIGN.md, quant/):
// a float16 weight [24, 40] quantized to NF4 at block 64 without double
// quantization, its JSON spaced as Python's json.dumps writes it.
TEST_F(QuantizedModelIo, LoadsAHandLaidBitsandbytesFile) {
  torch::manual_seed(5);
  const torch::Tensor w = torch::randn({24, 40}).to(torch::kFloat16);
  quant::Quantize4bitOptions o;
  o.double_quant = false;
  auto [packed, state] = quant::quantize_4bit(w, o);
  const std::string js =
      R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [24, 40]})";
  const torch::Tensor json_bytes =
      torch::from_blob(const_cast<char*>(js.data()), {int64_t(js.size())}, torch::kUInt8).clone();
  struct OneLayerImpl : torch::nn::Module {
    OneLayerImpl() { register_module("proj", torch::nn::Linear(40, 24)); }
  };
  auto model = std::make_shared<OneLayerImpl>();
  const torch::Tensor bias = torch::randn({24}).to(torch::kFloat16);
  quant::save_safetensors(path_, {{"proj.weight", packed},
                                  {"proj.weight.absmax", state.absmax},
                                  {"proj.weight.quant_map", quant::codebook(quant::Format::NF4)},
                                  {"proj.weight.quant_state.bitsandbytes__nf4", json_bytes},
                                  {"proj.bias", bias}});
  lora::load_quantized_model(*model, path_);
  auto* q = dynamic_cast<lora::Linear4bitImpl*>(lora::find_submodule(*model, "proj").get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->quant_state().dtype, torch::kFloat16);
  EXPECT_TRUE(torch::equal(q->dequantized_weight(), quant::dequantize_4bit(packed, state)));
  EXPECT_TRUE(torch::equal(q->bias, bias.to(torch::kFloat32)));
}

TEST_F(QuantizedModelIo, RefusesMismatchedModelsWithoutChangingThem) {
  testing::TinyNet net = quantized_net(6);
  lora::save_quantized_model(*net, path_);
  testing::TinyNet wider(32, 64, 10);
  expect_error([&] { lora::load_quantized_model(*wider, path_); },
               "'in_proj' holds a weight of shape [48, 32]; the model's Linear there is [64, 32]");
  for (const auto& m : wider->modules())
    EXPECT_EQ(dynamic_cast<lora::Linear4bitImpl*>(m.get()), nullptr) << "nothing replaced";

  auto file = quant::load_safetensors(path_);
  file.tensors["extra.weight"] = torch::zeros({2});
  quant::save_safetensors(path_, file.tensors);
  testing::TinyNet same(32, 48, 10);
  expect_error([&] { lora::load_quantized_model(*same, path_); },
               "tensor 'extra.weight' matches no parameter or buffer");
  file.tensors.erase("extra.weight");
  file.tensors.erase("norm.bias");
  quant::save_safetensors(path_, file.tensors);
  expect_error([&] { lora::load_quantized_model(*same, path_); }, "tensor 'norm.bias' is not in the file");
}

// in_proj int8 (threshold 6), fc1 NF4, fc2 FP4, lm_head float.
testing::TinyNet mixed_net(uint64_t seed) {
  lora::QuantizeConfig q;
  q.overrides = {{"in_proj", lora::LinearFormat::Int8}, {"fc2", lora::LinearFormat::FP4}};
  q.int8.threshold(6.0);
  return quantized_net(seed, q);
}

TEST_F(QuantizedModelIo, MixedModelRoundTripIsBitExactAndRecordsFormats) {
  testing::TinyNet net = mixed_net(11);
  lora::save_quantized_model(*net, path_);
  const auto file = quant::load_safetensors(path_);
  EXPECT_EQ(file.tensors.at("in_proj.weight").scalar_type(), torch::kInt8);
  EXPECT_EQ(file.tensors.at("in_proj.SCB").sizes(), (std::vector<int64_t>{48}));
  EXPECT_EQ(file.tensors.at("in_proj.weight_format").item<int>(), 0);
  EXPECT_TRUE(file.tensors.count("mlp.fc2.weight.quant_state.bitsandbytes__fp4"));
  const auto record = nlohmann::json::parse(file.metadata.at("lowbit.quantized_layers"));
  EXPECT_EQ(record, nlohmann::json::parse(R"({"in_proj": {"format": "int8", "threshold": 6.0},
      "mlp.fc1": {"format": "nf4"}, "mlp.fc2": {"format": "fp4"}})"));

  torch::manual_seed(98);
  testing::TinyNet fresh(32, 48, 10);
  lora::load_quantized_model(*fresh, path_);
  auto* a = dynamic_cast<lora::Linear8bitImpl*>(lora::find_submodule(*net, "in_proj").get());
  auto* b = dynamic_cast<lora::Linear8bitImpl*>(lora::find_submodule(*fresh, "in_proj").get());
  ASSERT_NE(b, nullptr) << "in_proj became a Linear8bit";
  EXPECT_TRUE(torch::equal(a->int8_weight(), b->int8_weight()));
  EXPECT_TRUE(torch::equal(a->scb(), b->scb()));
  EXPECT_EQ(b->options().threshold(), 6.0);  // from the record, not the load options
  auto* fc2 = dynamic_cast<lora::Linear4bitImpl*>(lora::find_submodule(*fresh, "mlp.fc2").get());
  ASSERT_NE(fc2, nullptr);
  EXPECT_EQ(fc2->quant_state().format, quant::Format::FP4);
  // Inputs with outliers, so the threshold's float path takes part.
  torch::Tensor x = torch::randn({4, 32});
  x[1][3] = 25.0f;
  EXPECT_TRUE(torch::equal(net->forward(x), fresh->forward(x)));
  // And into the quantized model itself, in place.
  testing::TinyNet again = mixed_net(12);
  lora::load_quantized_model(*again, path_);
  EXPECT_TRUE(torch::equal(net->forward(x), again->forward(x)));
}

TEST_F(QuantizedModelIo, LoadsBitsandbytesInt8EntriesWithoutARecord) {
  struct OneLayerImpl : torch::nn::Module {
    OneLayerImpl() { register_module("proj", torch::nn::Linear(40, 24)); }
  };
  torch::manual_seed(13);
  auto [codes, scb] = quant::quantize_int8_rowwise(torch::randn({24, 40}));
  const torch::Tensor bias = torch::randn({24}).to(torch::kFloat16);
  quant::save_safetensors(path_, {{"proj.weight", codes},
                                  {"proj.SCB", scb},
                                  {"proj.weight_format", torch::zeros({}, torch::kUInt8)},
                                  {"proj.bias", bias}});
  auto model = std::make_shared<OneLayerImpl>();
  lora::load_quantized_model(*model, path_, {}, lora::Linear8bitOptions().threshold(4.0));
  auto* q = dynamic_cast<lora::Linear8bitImpl*>(lora::find_submodule(*model, "proj").get());
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(torch::equal(q->int8_weight(), codes));
  EXPECT_TRUE(torch::equal(q->bias, bias.to(torch::kFloat32)));
  EXPECT_EQ(q->options().threshold(), 4.0);  // no record: the load options'
}

TEST_F(QuantizedModelIo, RefusesRecordsThatDisagreeWithTheTensors) {
  testing::TinyNet net = mixed_net(14);
  lora::save_quantized_model(*net, path_);
  auto file = quant::load_safetensors(path_);
  const auto rewrite = [&](const std::string& record) {
    auto metadata = file.metadata;
    metadata["lowbit.quantized_layers"] = record;
    quant::save_safetensors(path_, file.tensors, metadata);
  };
  testing::TinyNet fresh(32, 48, 10);
  rewrite(R"({"in_proj": {"format": "int3"}})");
  expect_error([&] { lora::load_quantized_model(*fresh, path_); },
               "layer 'in_proj' has format 'int3', which this version does not know");
  rewrite(R"({"in_proj": {"format": "nf4"}})");
  expect_error([&] { lora::load_quantized_model(*fresh, path_); },
               "metadata lists layer 'in_proj' as nf4, but its tensors are int8");
  rewrite(R"({"norm": {"format": "int8"}})");
  expect_error([&] { lora::load_quantized_model(*fresh, path_); },
               "metadata lists layer 'norm' as int8, but the file holds no quantized weight");
  for (const auto& m : fresh->modules()) {
    EXPECT_EQ(dynamic_cast<lora::Linear8bitImpl*>(m.get()), nullptr) << "nothing replaced";
    EXPECT_EQ(dynamic_cast<lora::Linear4bitImpl*>(m.get()), nullptr) << "nothing replaced";
  }
  // An int8 file layer over a 4-bit model layer.
  rewrite("{}");
  testing::TinyNet all_nf4 = quantized_net(15);
  expect_error([&] { lora::load_quantized_model(*all_nf4, path_); },
               "'in_proj' is int8 in the file but the model's layer there is a Linear4bit");
}

}  // namespace
}  // namespace lowbit
