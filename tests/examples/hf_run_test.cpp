// A finished Hugging Face run used without training, and PEFT adapters from
// elsewhere: lowbit-train --generate repeats the samples the run printed,
// --merge writes a checkpoint whose logits are the adapted model's, a recipe's
// model.adapter loads an adapter written in PEFT's exact layout (merged
// weights = base + scaling B A, computed here), refuses one that disagrees
// with the lora section, and trains on from it. Also: a resume that changes
// only the prompts, and quant.skip on a checkpoint read into NF4. The base
// checkpoint is a tiny Llama pretrained here by the llama recipe path.
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/config/recipe.h"
#include "examples/train/finished_run.h"
#include "examples/train/run_model.h"
#include "examples/train/trainer.h"
#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "lora/lora_linear.h"
#include "nn/hf_causal_lm.h"
#include "quant/safetensors.h"
#include "tests/examples/run_recipe.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

#if defined(LOWBIT_WITH_TEXT) && defined(LOWBIT_WITH_SENTENCEPIECE)

namespace lowbit::train {
namespace {

namespace fs = std::filesystem;
using lowbit::testing::run;
using lowbit::testing::ScratchDir;

// A tokenizer of 512 SentencePiece tokens and a one-layer GQA Llama trained
// for 4 steps on fortunes: its export (<run>/hf: config.json,
// model.safetensors, tokenizer.model) is the checkpoint the tests fine-tune.
const char* kPretrain = R"(
device: cpu
model: {name: llama, vocab_size: 512, block_size: 32, n_layer: 1, n_head: 2, n_kv_head: 1, n_embd: 32}
data: {name: fortunes, files: [computers], eval_limit: 4}
optimizer: {name: adamw8bit, lr: 3.0e-3, min_8bit_size: 64}
train: {steps: 4, batch_size: 4, seed: 1, threads: 1}
log: {progress: none}
)";

const std::vector<std::string> kProjections = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                               "gate_proj", "up_proj", "down_proj"};

class HfRun : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    base_ = new ScratchDir;
    run(config::load_recipe_text(kPretrain, "pretrain", "pretrain",
                                 {"checkpoint.dir=" + base_->file("pretrain")}));
  }
  static void TearDownTestSuite() {
    delete base_;
    base_ = nullptr;
  }
  static std::string checkpoint() { return base_->file("pretrain/hf"); }

  // QLoRA on the checkpoint (NF4 base, fp16 adapters on every projection).
  config::Recipe qlora(const std::vector<std::string>& extra = {}) const {
    return on_checkpoint(R"(
quant: {type: nf4, block_size: 64}
lora: {r: 4, alpha: 8, target: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}
optimizer: {name: adamw8bit, lr: 1.0e-2, min_8bit_size: 64}
train: {steps: 3, batch_size: 4, seed: 2, threads: 1}
generate: {prompts: ["A computer"], max_new_tokens: 6}
)",
                         "run", extra);
  }

  // An fp32 base with the PEFT adapter in `adapter` and no lora section
  // unless `extra` gives one.
  config::Recipe with_adapter(const std::string& adapter,
                              const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> overrides = {"model.adapter=" + adapter};
    overrides.insert(overrides.end(), extra.begin(), extra.end());
    return on_checkpoint(R"(
optimizer: {name: adamw8bit, lr: 1.0e-4, min_8bit_size: 64}
train: {steps: 2, batch_size: 4, seed: 3, threads: 1}
generate: {prompts: ["The system"], max_new_tokens: 4}
)",
                         "adapted", overrides);
  }

  // `sections` on the checkpoint with fortunes data, run in <scratch>/<name>.
  config::Recipe on_checkpoint(const std::string& sections, const std::string& name,
                               const std::vector<std::string>& extra) const {
    std::vector<std::string> overrides = {"model.path=" + checkpoint(),
                                          "checkpoint.dir=" + dir_.file(name)};
    overrides.insert(overrides.end(), extra.begin(), extra.end());
    return config::load_recipe_text(R"(
device: cpu
model: {name: hf_causal_lm, block_size: 32}
data: {name: fortunes, files: [computers], eval_limit: 4}
log: {progress: none}
)" + sections,
                                    name, name, overrides);
  }

  static inline ScratchDir* base_ = nullptr;
  ScratchDir dir_;
};

nn::LlamaForCausalLMImpl& as_llama(const RunModel& built) {
  auto* llama = dynamic_cast<nn::LlamaForCausalLMImpl*>(built.model.get());
  EXPECT_NE(llama, nullptr);
  return *llama;
}

torch::Tensor logits_of(nn::LlamaForCausalLMImpl& model, const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  model.eval();
  return model.forward(ids)[0].to(torch::kFloat64);
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// The "[prompt] -> text" lines of `output` after `title`.
std::vector<std::string> sample_lines(const std::string& output, const std::string& title) {
  std::vector<std::string> lines;
  std::istringstream in(
      output.substr(output.find(title) == std::string::npos ? output.size() : output.find(title)));
  std::string line;
  while (std::getline(in, line)) {
    const size_t open = line.find('[');
    if (open != std::string::npos && line.find("] -> ") != std::string::npos)
      lines.push_back(line.substr(open));
  }
  return lines;
}

TEST_F(HfRun, GenerateRepeatsTheSamplesTheRunPrinted) {
  const config::Recipe recipe = qlora();
  std::string trained;
  EXPECT_EQ(run(recipe, &trained).end_step, 3);
  const std::vector<std::string> after = sample_lines(trained, "samples after training");
  ASSERT_EQ(after.size(), 1u) << trained;

  // Greedy decoding of the same weights, reloaded from model.pt into a
  // freshly built model: the same text.
  std::ostringstream out;
  generate_from_run(recipe, {}, out);
  EXPECT_EQ(sample_lines(out.str(), "weights"), after) << out.str();
  EXPECT_NE(out.str().find("weights: " + dir_.file("run/model.pt")), std::string::npos)
      << out.str();

  std::ostringstream chosen;
  generate_from_run(recipe, {"The system", "A fool"}, chosen);
  const std::vector<std::string> lines = sample_lines(chosen.str(), "weights");
  ASSERT_EQ(lines.size(), 2u) << chosen.str();
  EXPECT_EQ(lines[0].rfind("[The system] -> ", 0), 0u);
  EXPECT_EQ(lines[1].rfind("[A fool] -> ", 0), 0u);

  std::ostringstream ignored;
  testing::expect_error_all<config::RecipeError>(
      [&] { generate_from_run(qlora({"generate.prompts=[]"}), {}, ignored); },
      {"--generate", "no prompts", "--prompt", "generate.prompts"});
}

TEST_F(HfRun, MergeWritesACheckpointWithTheAdaptedLogits) {
  const config::Recipe recipe = qlora();
  run(recipe);
  std::ostringstream out;
  const std::string merged = merge_run(recipe, "", out);
  EXPECT_EQ(merged, dir_.file("run/merged"));
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(merged)) files.insert(e.path().filename().string());
  // The checkpoint's tokenizer comes along, so the folder loads on its own.
  EXPECT_EQ(files, (std::set<std::string>{"config.json", "model.safetensors", "tokenizer.model"}));
  const quant::SafetensorsFile weights = quant::load_safetensors(merged + "/model.safetensors");
  for (const auto& [name, tensor] : weights.tensors) {
    EXPECT_EQ(name.find("lora"), std::string::npos) << name;
    EXPECT_EQ(tensor.scalar_type(), torch::kFloat32) << name;
  }

  RunModel adapted = make_run_model(recipe);
  ASSERT_EQ(load_newest_weights(recipe, adapted), dir_.file("run/model.pt"));
  nn::LlamaForCausalLM from_merged = nn::load_hf_causal_lm(merged);
  nn::LlamaForCausalLM base = nn::load_hf_causal_lm(checkpoint());
  const torch::Tensor ids = torch::randint(512, {1, 16}, torch::kInt64);
  const torch::Tensor want = logits_of(as_llama(adapted), ids);
  // The adapted model computes dequant(W) x + 2 B (A x) in float32, the
  // merged one (dequant(W) + 2 B A) x: float32 rounding of O(1) logits
  // through one layer is ~1e-6; 1e-4 is far below what the training moved.
  EXPECT_LT(max_diff(logits_of(*from_merged, ids), want), 1e-4);
  EXPECT_GT(max_diff(logits_of(*base, ids), want), 1e-3);  // NF4 and the adapters
}

// An adapter as PEFT writes it: adapter_model.safetensors with PEFT's key
// names, adapter_config.json with its fields (peft/tuners/lora/config.py).
struct PeftAdapter {
  std::map<std::string, torch::Tensor> tensors;
  int64_t r = 2;
  double alpha = 4;
};

PeftAdapter write_peft_adapter(const std::string& dir, const std::string& base_model) {
  // One layer, hidden 32, 2 heads of 16, 1 key/value head: q_proj [32, 32],
  // v_proj [16, 32].
  PeftAdapter adapter;
  torch::manual_seed(11);
  for (const auto& [proj, out] :
       std::vector<std::pair<std::string, int64_t>>{{"q_proj", 32}, {"v_proj", 16}}) {
    const std::string key = "base_model.model.model.layers.0.self_attn." + proj;
    adapter.tensors[key + ".lora_A.weight"] = torch::randn({adapter.r, 32}) * 0.2;
    adapter.tensors[key + ".lora_B.weight"] = torch::randn({out, adapter.r}) * 0.2;
  }
  fs::create_directories(dir);
  quant::save_safetensors(dir + "/adapter_model.safetensors", adapter.tensors, {{"format", "pt"}});
  const nlohmann::json config = {{"alpha_pattern", nlohmann::json::object()},
                                 {"auto_mapping", nullptr},
                                 {"base_model_name_or_path", base_model},
                                 {"bias", "none"},
                                 {"fan_in_fan_out", false},
                                 {"inference_mode", true},
                                 {"init_lora_weights", true},
                                 {"layers_pattern", nullptr},
                                 {"layers_to_transform", nullptr},
                                 {"lora_alpha", 4},
                                 {"lora_dropout", 0.05},
                                 {"modules_to_save", nullptr},
                                 {"peft_type", "LORA"},
                                 {"r", 2},
                                 {"rank_pattern", nlohmann::json::object()},
                                 {"revision", nullptr},
                                 {"target_modules", {"v_proj", "q_proj"}},
                                 {"task_type", "CAUSAL_LM"},
                                 {"use_dora", false},
                                 {"use_rslora", false}};
  std::ofstream(dir + "/adapter_config.json") << config.dump(2);
  return adapter;
}

TEST_F(HfRun, MergesAnAdapterWrittenByPeft) {
  const PeftAdapter adapter = write_peft_adapter(dir_.file("peft"), checkpoint());
  const config::Recipe recipe = with_adapter(dir_.file("peft"));
  std::ostringstream out;
  const std::string merged = merge_run(recipe, dir_.file("merged"), out);
  EXPECT_NE(out.str().find("the recipe's starting model"), std::string::npos) << out.str();
  const quant::SafetensorsFile base = quant::load_safetensors(checkpoint() + "/model.safetensors");
  const quant::SafetensorsFile got = quant::load_safetensors(merged + "/model.safetensors");
  ASSERT_EQ(got.tensors.size(), base.tensors.size());
  const double scaling = adapter.alpha / double(adapter.r);  // PEFT's lora_alpha / r
  for (const auto& [name, tensor] : base.tensors) {
    const std::string module = name.substr(0, name.size() - std::string(".weight").size());
    const auto a = adapter.tensors.find("base_model.model." + module + ".lora_A.weight");
    if (a == adapter.tensors.end()) {
      EXPECT_TRUE(torch::equal(got.tensors.at(name), tensor)) << name << " is not adapted";
      continue;
    }
    const torch::Tensor b = adapter.tensors.at("base_model.model." + module + ".lora_B.weight");
    const torch::Tensor want =
        tensor.to(torch::kFloat64) +
        scaling * b.to(torch::kFloat64).matmul(a->second.to(torch::kFloat64));
    // Entries O(0.1): float32 rounding of the sum is ~1e-8.
    EXPECT_LT(max_diff(got.tensors.at(name), want), 1e-6) << name;
    EXPECT_GT(max_diff(got.tensors.at(name), tensor), 1e-2) << name;
  }

  std::ostringstream samples;
  generate_from_run(recipe, {}, samples);
  EXPECT_EQ(sample_lines(samples.str(), "weights").size(), 1u) << samples.str();
}

TEST_F(HfRun, AdapterThatDisagreesWithTheLoraSectionIsRefused) {
  write_peft_adapter(dir_.file("peft"), checkpoint());
  const std::string file = dir_.file("peft/adapter_config.json");
  testing::expect_error_all<config::RecipeError>(
      [&] {
        make_run_model(with_adapter(dir_.file("peft"),
                                    {"lora.r=4", "lora.alpha=4", "lora.target=[q_proj, v_proj]"}));
      },
      {file, "r is 2", "lora.r is 4"});
  testing::expect_error_all<config::RecipeError>(
      [&] {
        make_run_model(
            with_adapter(dir_.file("peft"), {"lora.r=2", "lora.alpha=4", "lora.target=[q_proj]"}));
      },
      {file, "target_modules is [q_proj, v_proj]", "lora.target is [q_proj]"});
  testing::expect_error_all<config::RecipeError>(
      [&] { with_adapter(checkpoint()); },
      {"model.adapter", "'" + checkpoint() + "' has no adapter_config.json"});
}

TEST_F(HfRun, TrainsOnFromAPeftAdapter) {
  const PeftAdapter adapter = write_peft_adapter(dir_.file("peft"), checkpoint());
  const config::Recipe recipe =
      with_adapter(dir_.file("peft"),
                   {"lora.r=2", "lora.alpha=4", "lora.target=[v_proj, q_proj]", "lora.dtype=fp32"});
  EXPECT_EQ(run(recipe).end_step, 2);
  const quant::SafetensorsFile trained =
      quant::load_safetensors(dir_.file("adapted/adapter/adapter_model.safetensors"));
  ASSERT_EQ(trained.tensors.size(), adapter.tensors.size());
  for (const auto& [name, start] : adapter.tensors) {
    // Adam moves an element by about lr = 1e-4 per step: two steps stay far
    // below 1e-3, while a fresh adapter (Kaiming A, zero B) differs by ~0.2.
    const double moved = max_diff(trained.tensors.at(name), start);
    EXPECT_LT(moved, 1e-3) << name;
    EXPECT_GT(moved, 0.0) << name;
  }
}

TEST_F(HfRun, ResumeAcceptsNewPrompts) {
  run(qlora());
  std::string output;
  const RunResult more =
      run(qlora({"train.steps=4", "generate.prompts=[\"Another\"]", "generate.max_new_tokens=3"}),
          &output);
  EXPECT_EQ(more.start_step, 3);
  EXPECT_EQ(more.end_step, 4);
  EXPECT_EQ(sample_lines(output, "samples after training").at(0).rfind("[Another] -> ", 0), 0u);
}

TEST_F(HfRun, QuantSkipKeepsProjectionsInFullPrecision) {
  const RunModel built =
      make_run_model(qlora({"quant.skip=[down_proj, layers.0.self_attn.q_proj]"}));
  int64_t four_bit = 0, full = 0;
  for (const auto& item : built.model->named_modules("", /*include_self=*/false)) {
    auto* layer = dynamic_cast<lora::LoraLinearImpl*>(item.value().get());
    if (!layer) continue;
    const bool kept = item.key().find("down_proj") != std::string::npos ||
                      item.key() == "model.layers.0.self_attn.q_proj";
    const bool is_4bit = dynamic_cast<lora::Linear4bitImpl*>(layer->base_layer().get()) != nullptr;
    EXPECT_EQ(is_4bit, !kept) << item.key();
    (is_4bit ? four_bit : full) += 1;
  }
  EXPECT_EQ(four_bit, 5);
  EXPECT_EQ(full, 2);
}

// quant.type int8: the loader reads every projection into an LLM.int8()
// layer (with quant.threshold), under the adapters.
TEST_F(HfRun, QuantInt8ReadsProjectionsIntoLinear8bit) {
  const RunModel built = make_run_model(qlora({"quant.type=int8", "quant.threshold=6.0"}));
  int64_t int8 = 0;
  for (const auto& item : built.model->named_modules("", /*include_self=*/false)) {
    auto* layer = dynamic_cast<lora::LoraLinearImpl*>(item.value().get());
    if (!layer) continue;
    auto* base = dynamic_cast<lora::Linear8bitImpl*>(layer->base_layer().get());
    ASSERT_NE(base, nullptr) << item.key();
    EXPECT_EQ(base->options().threshold(), 6.0);
    ++int8;
  }
  EXPECT_EQ(int8, 7);
}

}  // namespace
}  // namespace lowbit::train

#endif
