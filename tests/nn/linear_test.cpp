// lowbit::nn::Linear: a user's model with typed members keeps working after
// quantize_model (NF4, int8) and apply_lora, with the names, outputs and files
// of the same model built on the module registry; a plain torch::nn::Linear
// member is refused with a message naming it and the fix.
#include <fstream>
#include <functional>
#include <iterator>
#include <map>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lora/apply_lora.h"
#include "lora/peft_io.h"
#include "lora/quantize_model.h"
#include "lora/quantized_model_io.h"
#include "nn/linear.h"
#include "nn/linear_like.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit {
namespace {

// A model as users write it: typed members called directly.
struct TypedNetImpl : torch::nn::Module {
  TypedNetImpl() {
    fc1 = register_module("fc1", nn::Linear(24, 40));
    fc2 = register_module("fc2", nn::Linear(torch::nn::LinearOptions(40, 8).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::gelu(fc1(x))); }
  nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(TypedNet);

// The same model on the registry: no typed members, layers called by name.
struct RegistryNetImpl : torch::nn::Module {
  RegistryNetImpl() {
    register_module("fc1", torch::nn::Linear(24, 40));
    register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(40, 8).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return nn::forward_linear(*this, "fc2", torch::gelu(nn::forward_linear(*this, "fc1", x)));
  }
};
TORCH_MODULE(RegistryNet);

// The same model with plain torch::nn::Linear members.
struct PlainNetImpl : torch::nn::Module {
  PlainNetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(24, 40));
    fc2 = register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(40, 8).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::gelu(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(PlainNet);

// Every parameter and buffer by name.
std::map<std::string, torch::Tensor> tensors_of(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value();
  for (const auto& b : m.named_buffers()) out[b.key()] = b.value();
  return out;
}

std::vector<std::string> names_of(torch::nn::Module& m) {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors_of(m)) names.push_back(name);
  return names;
}

// Copies `from`'s float weights into `to` (both unconverted, same names).
void copy_weights(torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto source = tensors_of(from);
  for (auto& [name, t] : tensors_of(to)) t.copy_(source.at(name));
}

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A typed model and a registry model with the same float weights.
struct Twins {
  explicit Twins(uint64_t seed) {
    torch::manual_seed(seed);
    typed = TypedNet();
    registry = RegistryNet();
    copy_weights(*typed, *registry);
  }
  // Both converted with the same config; returns the typed model's report.
  lora::QuantizeReport quantize(lora::LinearFormat format) {
    lora::QuantizeConfig config;
    config.format = format;
    const lora::QuantizeReport report = lora::quantize_model(*typed, config);
    EXPECT_EQ(report.to_table(), lora::quantize_model(*registry, config).to_table());
    return report;
  }
  TypedNet typed{nullptr};
  RegistryNet registry{nullptr};
};

lora::LoraConfig lora_config() {
  lora::LoraConfig c;
  c.r = 4;
  c.lora_alpha = 8;
  c.target_modules = {"fc1", "fc2"};
  c.dtype = torch::kFloat32;  // trained with torch::optim::SGD below
  return c;
}

TEST(NnLinear, HasTorchLinearNamesAndOutputs) {
  torch::manual_seed(0);
  TypedNet typed;
  PlainNet plain;
  copy_weights(*plain, *typed);
  EXPECT_EQ(names_of(*typed), names_of(*plain));
  EXPECT_EQ(names_of(*typed), (std::vector<std::string>{"fc1.bias", "fc1.weight", "fc2.weight"}));
  EXPECT_EQ(typed->fc1->in_features(), 24);
  EXPECT_EQ(typed->fc1->out_features(), 40);
  EXPECT_TRUE(typed->fc1->has_bias());
  EXPECT_FALSE(typed->fc2->has_bias());
  ASSERT_NE(typed->fc1->as_float_linear(), nullptr);
  const torch::Tensor x = torch::randn({5, 24});
  EXPECT_TRUE(torch::equal(typed->forward(x), plain->forward(x)));  // the same torch::linear calls
}

class NnLinearFormats : public ::testing::TestWithParam<lora::LinearFormat> {};

// A typed model and a registry model with the same weights, converted alike,
// hold the same tensors under the same names and compute the same bits.
TEST_P(NnLinearFormats, QuantizeModelConvertsInPlaceLikeTheRegistry) {
  Twins twins(1);
  TypedNet& typed = twins.typed;
  RegistryNet& registry = twins.registry;
  const torch::Tensor x = torch::randn({6, 24});
  const torch::Tensor y_float = typed->forward(x);
  const std::shared_ptr<torch::nn::Module> fc1_before = typed->fc1.ptr();
  twins.quantize(GetParam());
  EXPECT_EQ(typed->fc1.ptr(), fc1_before);  // the member holds the same, changed, module
  if (GetParam() == lora::LinearFormat::Int8)
    EXPECT_NE(std::dynamic_pointer_cast<lora::Linear8bitImpl>(typed->fc1->impl()), nullptr);
  else
    EXPECT_NE(std::dynamic_pointer_cast<lora::Linear4bitImpl>(typed->fc1->impl()), nullptr);
  EXPECT_EQ(typed->fc1->as_float_linear(), nullptr);
  EXPECT_EQ(names_of(*typed), names_of(*registry));
  auto registry_tensors = tensors_of(*registry);
  for (const auto& [name, t] : tensors_of(*typed)) EXPECT_TRUE(torch::equal(t, registry_tensors.at(name))) << name;
  const torch::Tensor y = typed->forward(x);
  EXPECT_TRUE(torch::equal(y, registry->forward(x)));
  // Sanity against float: NF4's weight error is ~10% relative (int8's ~1%),
  // and this two-layer output stays within 25% of the float one.
  EXPECT_LT(((y - y_float).norm() / y_float.norm()).item<double>(), 0.25);
}

// apply_lora over the converted typed model: the adapters train, nothing
// else changes, and the model matches the registry model step for step.
TEST_P(NnLinearFormats, ApplyLoraTrainsOnlyTheAdapters) {
  Twins twins(2);
  TypedNet& typed = twins.typed;
  RegistryNet& registry = twins.registry;
  twins.quantize(GetParam());
  torch::manual_seed(3);
  auto typed_params = lora::apply_lora(*typed, lora_config());
  torch::manual_seed(3);  // the same adapter initialisation
  auto registry_params = lora::apply_lora(*registry, lora_config());
  EXPECT_EQ(names_of(*typed), names_of(*registry));
  EXPECT_EQ(tensors_of(*typed).count("fc1.lora_A"), 1u);
  EXPECT_EQ(tensors_of(*typed).count("fc1.base_layer.weight"), 1u);
  EXPECT_NE(std::dynamic_pointer_cast<lora::LoraLinearImpl>(typed->fc1->impl()), nullptr);
  EXPECT_EQ(lora::lora_layers(*typed).size(), 2u);

  std::map<std::string, torch::Tensor> before;
  for (const auto& [name, t] : tensors_of(*typed)) before[name] = t.clone();
  const torch::Tensor x = torch::randn({6, 24}), target = torch::randn({6, 8});
  for (auto* run : {&typed_params, &registry_params}) {
    torch::optim::SGD sgd(*run, torch::optim::SGDOptions(0.5));
    for (int step = 0; step < 2; ++step) {
      sgd.zero_grad();
      const torch::Tensor y = run == &typed_params ? typed->forward(x) : registry->forward(x);
      torch::mse_loss(y, target).backward();
      sgd.step();
    }
  }
  for (const auto& [name, t] : tensors_of(*typed)) {
    const bool adapter = name.find("lora_") != std::string::npos;
    EXPECT_EQ(torch::equal(t, before.at(name)), !adapter) << name;
  }
  EXPECT_TRUE(torch::equal(typed->forward(x), registry->forward(x)));
}

// The files (quantized model, PEFT adapter) are those of the registry model,
// byte for byte, and load back into a fresh typed model bit for bit.
TEST_P(NnLinearFormats, SavesTheRegistryModelsFilesAndLoadsThemBack) {
  Twins twins(4);
  TypedNet& typed = twins.typed;
  RegistryNet& registry = twins.registry;
  twins.quantize(GetParam());
  for (torch::nn::Module* m : {static_cast<torch::nn::Module*>(typed.get()),
                               static_cast<torch::nn::Module*>(registry.get())}) {
    torch::manual_seed(5);
    lora::apply_lora(*m, lora_config());
    torch::NoGradGuard no_grad;
    torch::manual_seed(6);  // trained-looking adapters
    for (auto& [path, layer] : lora::lora_layers(*m)) layer->lora_B.normal_();
  }
  testing::ScratchDir scratch;
  lora::save_quantized_model(*typed, scratch.file("typed.safetensors"));
  lora::save_quantized_model(*registry, scratch.file("registry.safetensors"));
  lora::save_adapter(*typed, scratch.file("typed_adapter"), lora_config());
  lora::save_adapter(*registry, scratch.file("registry_adapter"), lora_config());
  EXPECT_EQ(bytes_of(scratch.file("typed.safetensors")), bytes_of(scratch.file("registry.safetensors")));
  for (const char* file : {"adapter_model.safetensors", "adapter_config.json"})
    EXPECT_EQ(bytes_of(scratch.file("typed_adapter/") + file),
              bytes_of(scratch.file("registry_adapter/") + file))
        << file;

  TypedNet loaded;
  lora::load_quantized_model(*loaded, scratch.file("typed.safetensors"));
  lora::load_adapter(*loaded, scratch.file("typed_adapter"));
  const torch::Tensor x = torch::randn({3, 24});
  EXPECT_TRUE(torch::equal(loaded->forward(x), typed->forward(x)));
  EXPECT_EQ(names_of(*loaded), names_of(*typed));
}

INSTANTIATE_TEST_SUITE_P(Formats, NnLinearFormats,
                         ::testing::Values(lora::LinearFormat::NF4, lora::LinearFormat::Int8),
                         [](const auto& info) { return lora::linear_format_name(info.param); });

// A plain torch::nn::Linear member would keep running the old layer: both
// conversions refuse it, name the layer and the fix, and change nothing.
TEST(NnLinear, PlainTorchLinearMembersAreRefused) {
  torch::manual_seed(7);
  PlainNet plain;
  const torch::Tensor x = torch::randn({2, 24});
  const torch::Tensor y = plain->forward(x);
  for (const auto& convert : std::vector<std::function<void()>>{
           [&] { lora::quantize_model(*plain); },
           [&] { lora::apply_lora(*plain, lora_config()); }}) {
    const std::string message = testing::message_of(convert);
    EXPECT_NE(message.find("cannot replace 'fc1'"), std::string::npos) << message;
    EXPECT_NE(message.find("typed member"), std::string::npos) << message;
    EXPECT_NE(message.find("lowbit::nn::Linear"), std::string::npos) << message;
  }
  EXPECT_TRUE(torch::equal(plain->forward(x), y));
  for (const auto& p : plain->parameters()) EXPECT_TRUE(p.requires_grad());
}

// Changing in place needs no registry slot: a lowbit::nn::Linear inside a
// Sequential converts, and the mode set on the model reaches its current form.
TEST(NnLinear, ConvertsInsideSequentialAndFollowsTheTrainingMode) {
  torch::manual_seed(8);
  nn::Linear layer(16, 16);
  torch::nn::Sequential seq(layer, torch::nn::ReLU());
  const torch::Tensor x = torch::randn({4, 16});
  const torch::Tensor y_float = seq->forward(x);
  lora::QuantizeConfig q;
  q.format = lora::LinearFormat::Int8;
  EXPECT_EQ(lora::quantize_model(*seq, q).replaced, (std::vector<std::string>{"0"}));
  const torch::Tensor y = seq->forward(x);
  // int8 row-wise: ~0.4% of each row's absmax per weight; 5% on the output is loose.
  EXPECT_LT(((y - y_float).norm() / y_float.norm()).item<double>(), 0.05);
  lora::LoraConfig c = lora_config();
  c.target_modules = {"0"};
  c.lora_dropout = 0.5;
  lora::apply_lora(*seq, c);
  seq->eval();
  EXPECT_FALSE(layer->impl()->is_training());
  seq->train();
  EXPECT_TRUE(layer->impl()->is_training());
}

}  // namespace
}  // namespace lowbit
