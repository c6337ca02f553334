// The merged checkpoint save_hf_causal_lm writes for a model with LoRA
// adapters (lowbit-train --merge): its files are a plain Hugging Face
// checkpoint, and its logits equal the adapted model's, on an fp32 base and
// on an NF4 base (whose merged weights are the dequantized base plus the
// adapter), both checked against the float64 reference fed the merged
// weights computed here. Also: modules_to_not_convert keeps projections in
// full precision while loading into NF4.
#include <algorithm>
#include <filesystem>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "lora/apply_lora.h"
#include "lora/linear4bit.h"
#include "nn/hf_causal_lm.h"
#include "quant/safetensors.h"
#include "tests/nn/tiny_llama.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::nn {
namespace {

using testing::ReferenceLlama;
using testing::ScratchDir;
using testing::TinyLlamaSpec;
namespace fs = std::filesystem;

const std::vector<std::string> kProjections = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                               "gate_proj", "up_proj", "down_proj"};

std::vector<int64_t> token_ids(int64_t n, int64_t vocab, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const torch::Tensor ids = torch::randint(vocab, {n}, gen, torch::kInt64);
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + n);
}

torch::Tensor logits_of(LlamaForCausalLMImpl& model, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  model.eval();
  return model.forward(torch::tensor(ids, torch::kInt64).unsqueeze(0))[0];
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// LoRA (r 4, alpha 8: scaling 2) on every projection with B drawn N(0, 0.05)
// so the adapters move the logits; fp32 adapters so that the adapted model
// and the merge see the same values.
void add_trained_looking_adapters(LlamaForCausalLMImpl& model) {
  lora::LoraConfig config;
  config.r = 4;
  config.lora_alpha = 8;
  config.target_modules = kProjections;
  config.dtype = torch::kFloat32;
  torch::manual_seed(3);
  lora::apply_lora(model, config);
  torch::NoGradGuard no_grad;
  for (const auto& [path, layer] : lora::lora_layers(model)) layer->lora_B.normal_(0.0, 0.05);
}

// The reference with each adapted projection's weight replaced by
// base + 2 B A in float64, the base being `base_weight(path)`.
template <typename BaseWeight>
ReferenceLlama merged_reference(const std::string& dir, LlamaForCausalLMImpl& model,
                                BaseWeight base_weight) {
  ReferenceLlama reference(dir);
  for (const auto& [path, layer] : lora::lora_layers(model)) {
    const torch::Tensor a = layer->lora_A.detach().to(torch::kFloat64);
    const torch::Tensor b = layer->lora_B.detach().to(torch::kFloat64);
    reference.set_weight(path + ".weight",
                         base_weight(path, reference).to(torch::kFloat64) + 2.0 * b.matmul(a));
  }
  return reference;
}

// The written folder holds exactly config.json and model.safetensors with
// the tensors (names and shapes) of the original checkpoint: no adapter keys.
void expect_plain_hf_layout(const std::string& original, const std::string& merged) {
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(merged)) files.insert(e.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"config.json", "model.safetensors"}));
  const io::HfCheckpoint want(original), got(merged);
  const std::vector<std::string> names = want.names(), written = got.names();
  EXPECT_EQ(std::set<std::string>(written.begin(), written.end()),
            std::set<std::string>(names.begin(), names.end()));
  for (const std::string& name : names)
    if (got.contains(name)) {
      EXPECT_EQ(got.entry(name).shape, want.entry(name).shape) << name;
    }
  const io::LlamaConfig config = io::load_llama_config(merged + "/config.json");
  EXPECT_EQ(config.torch_dtype, torch::kFloat32);
}

// The adapted model and the merged checkpoint compute in float32 in a
// different order (x W^T + 2 (x A^T) B^T against x (W + 2 B A)^T), and the
// reference in float64: the tiny model's logits are O(1), so float32
// rounding through two layers stays near 1e-6 (tests/nn/llama_test.cpp,
// kFloat32Tolerance); 1e-5 leaves a margin while a merge with a wrong scale
// or a transposed product moves logits by 1e-2 or more.
constexpr double kTolerance = 1e-5;

TEST(HfMerge, Fp32BaseMergedLogitsEqualTheAdaptedModel) {
  ScratchDir dir;
  TinyLlamaSpec spec;
  testing::write_tiny_llama(dir.file("original"), spec);
  LlamaForCausalLM model = load_hf_causal_lm(dir.file("original"));
  const auto ids = token_ids(12, spec.vocab, 4);
  const torch::Tensor base_logits = logits_of(*model, ids);
  add_trained_looking_adapters(*model);
  const torch::Tensor adapted = logits_of(*model, ids);
  ASSERT_GT(max_diff(adapted, base_logits), 1e-2);  // the adapters matter

  save_hf_causal_lm(*model, dir.file("merged"));
  expect_plain_hf_layout(dir.file("original"), dir.file("merged"));
  LlamaForCausalLM merged = load_hf_causal_lm(dir.file("merged"));
  EXPECT_LT(max_diff(logits_of(*merged, ids), adapted), kTolerance);
  const ReferenceLlama reference = merged_reference(
      dir.file("original"), *model, [](const std::string& path, const ReferenceLlama& r) {
        return r.weights().at(path + ".weight");
      });
  EXPECT_LT(max_diff(logits_of(*merged, ids), reference.logits(ids)), kTolerance);
}

TEST(HfMerge, Nf4BaseMergesTheDequantizedWeights) {
  ScratchDir dir;
  TinyLlamaSpec spec;
  testing::write_tiny_llama(dir.file("original"), spec);
  HfLoadOptions nf4;
  nf4.quantize = true;
  LlamaForCausalLM model = load_hf_causal_lm(dir.file("original"), nf4);
  add_trained_looking_adapters(*model);
  const auto ids = token_ids(12, spec.vocab, 5);
  const torch::Tensor adapted = logits_of(*model, ids);

  save_hf_causal_lm(*model, dir.file("merged"));
  expect_plain_hf_layout(dir.file("original"), dir.file("merged"));
  LlamaForCausalLM merged = load_hf_causal_lm(dir.file("merged"));
  EXPECT_LT(max_diff(logits_of(*merged, ids), adapted), kTolerance);
  // The merged weights are the 4-bit layers' dequantized values plus 2 B A.
  const ReferenceLlama reference = merged_reference(
      dir.file("original"), *model, [&](const std::string& path, const ReferenceLlama&) {
        for (const auto& [adapted_path, layer] : lora::lora_layers(*model)) {
          if (adapted_path != path) continue;
          auto* base = dynamic_cast<lora::Linear4bitImpl*>(layer->base_layer().get());
          if (base) return base->dequantized_weight();
        }
        ADD_FAILURE() << path << " has no Linear4bit base";
        return torch::Tensor();
      });
  EXPECT_LT(max_diff(logits_of(*merged, ids), reference.logits(ids)), kTolerance);
}

TEST(HfMerge, ModulesToNotConvertStayInFullPrecision) {
  ScratchDir dir;
  TinyLlamaSpec spec;
  testing::write_tiny_llama(dir.path(), spec);
  HfLoadOptions options;
  options.quantize = true;
  options.modules_to_not_convert = {"down_proj", "layers.0.self_attn.q_proj"};
  HfLoadReport report;
  LlamaForCausalLM model = load_hf_causal_lm(dir.path(), options, &report);
  EXPECT_EQ(report.quantized_layers, 2 * 7 - 2 - 1);
  const ReferenceLlama reference(dir.path());
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    const std::string& path = item.key();
    const bool projection =
        std::any_of(kProjections.begin(), kProjections.end(), [&](const std::string& p) {
          return path.size() > p.size() && path.compare(path.size() - p.size(), p.size(), p) == 0;
        });
    if (!projection) continue;
    const bool kept =
        path.find("down_proj") != std::string::npos || path == "model.layers.0.self_attn.q_proj";
    auto* q = dynamic_cast<lora::Linear4bitImpl*>(item.value().get());
    auto* linear = dynamic_cast<torch::nn::LinearImpl*>(item.value().get());
    EXPECT_EQ(q != nullptr, !kept) << path;
    EXPECT_EQ(linear != nullptr, kept) << path;
    // A kept layer holds the stored weight exactly.
    if (linear) {
      EXPECT_TRUE(torch::equal(linear->weight,
                               reference.weights().at(path + ".weight").to(torch::kFloat32)))
          << path;
    }
  }
}

}  // namespace
}  // namespace lowbit::nn
