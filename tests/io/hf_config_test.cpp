// config.json of Llama-family checkpoints: the published configs of
// Llama 3.2 1B, Qwen2.5 0.5B and Mistral 7B v0.1 read into the fields the
// model uses, transformers' defaults and spellings, a round trip, and
// refusals that name the file, the key and the value.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/hf_config.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::io {
namespace {

using nlohmann::json;
using testing::expect_error_all;

// meta-llama/Llama-3.2-1B-Instruct's config.json (values as published).
const char* kLlama32 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})";

// Qwen/Qwen2.5-0.5B: no attention_bias key, yet q/k/v have biases.
const char* kQwen25 = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936})";

// mistralai/Mistral-7B-v0.1.
const char* kMistral = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0",
  "use_cache": true, "vocab_size": 32000})";

// kLlama32 with the top-level keys of `patch` replaced (null deletes one).
std::string llama_with(const json& patch) {
  json c = json::parse(kLlama32);
  for (const auto& [key, value] : patch.items()) {
    if (value.is_null()) {
      c.erase(key);
    } else {
      c[key] = value;
    }
  }
  return c.dump();
}

TEST(HfConfig, ReadsLlama32) {
  const LlamaConfig c = parse_llama_config(kLlama32, "config.json");
  EXPECT_EQ(c.family, LlamaFamily::Llama);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 8192);
  EXPECT_EQ(c.num_hidden_layers, 16);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeType::Llama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias);
  EXPECT_EQ(c.torch_dtype, torch::kBFloat16);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_FALSE(c.pad_token_id);
  EXPECT_FALSE(c.sliding_window);
}

TEST(HfConfig, Qwen2HasQkvBiasesAndIgnoresAnUnusedSlidingWindow) {
  const LlamaConfig c = parse_llama_config(kQwen25, "config.json");
  EXPECT_EQ(c.family, LlamaFamily::Qwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias || c.mlp_bias);
  EXPECT_EQ(c.head_dim, 896 / 14);  // hidden_size / heads without a head_dim key
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_FALSE(c.sliding_window);  // use_sliding_window is false
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151643});

  json sliding = json::parse(kQwen25);
  sliding["use_sliding_window"] = true;
  EXPECT_EQ(parse_llama_config(sliding.dump(), "c").sliding_window, 32768);
}

TEST(HfConfig, MistralKeepsItsSlidingWindowAndHasNoBiases) {
  const LlamaConfig c = parse_llama_config(kMistral, "config.json");
  EXPECT_EQ(c.family, LlamaFamily::Mistral);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias);
  EXPECT_EQ(c.rope_scaling.type, RopeType::Default);
}

TEST(HfConfig, MissingOptionalKeysTakeTransformersDefaults) {
  const std::string minimal = R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2})";
  const LlamaConfig c = parse_llama_config(minimal, "c");
  EXPECT_EQ(c.num_key_value_heads, 2);  // = num_attention_heads
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.max_position_embeddings, 2048);  // LlamaConfig's default
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.torch_dtype);
}

TEST(HfConfig, AcceptsEveryRopeSpelling) {
  // "type" is transformers' older key for "rope_type".
  EXPECT_EQ(parse_llama_config(llama_with({{"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}}), "c")
                .rope_scaling.type,
            RopeType::Linear);
  const LlamaConfig dynamic =
      parse_llama_config(llama_with({{"rope_scaling", {{"rope_type", "dynamic"}, {"factor", 4}}}}), "c");
  EXPECT_EQ(dynamic.rope_scaling.type, RopeType::Dynamic);
  EXPECT_DOUBLE_EQ(dynamic.rope_scaling.factor, 4.0);
  // transformers 5 moves rope_theta into "rope_parameters".
  const LlamaConfig v5 = parse_llama_config(
      llama_with({{"rope_scaling", nullptr},
                  {"rope_theta", nullptr},
                  {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 1234.0}}}}),
      "c");
  EXPECT_EQ(v5.rope_scaling.type, RopeType::Default);
  EXPECT_DOUBLE_EQ(v5.rope_theta, 1234.0);
  // And "dtype" replaces "torch_dtype".
  EXPECT_EQ(parse_llama_config(llama_with({{"torch_dtype", nullptr}, {"dtype", "float16"}}), "c").torch_dtype,
            torch::kFloat16);
}

TEST(HfConfig, RoundTripsThroughToConfigJson) {
  for (const char* text : {kLlama32, kQwen25, kMistral}) {
    const LlamaConfig c = parse_llama_config(text, "original");
    const LlamaConfig back = parse_llama_config(to_config_json(c), "written");
    EXPECT_EQ(to_config_json(back), to_config_json(c));
    EXPECT_EQ(back.family, c.family);
    EXPECT_EQ(back.head_dim, c.head_dim);
    EXPECT_EQ(back.qkv_bias, c.qkv_bias);
    EXPECT_EQ(back.sliding_window, c.sliding_window);
    EXPECT_EQ(back.rope_scaling.type, c.rope_scaling.type);
    EXPECT_EQ(back.eos_token_ids, c.eos_token_ids);
  }
}

TEST(HfConfig, ErrorsNameTheFileTheKeyAndTheValue) {
  testing::ScratchDir dir;
  const std::string path = dir.file("config.json");
  auto refuses = [&](const std::string& text, const std::vector<std::string>& needles) {
    dir.write("config.json", text);
    std::vector<std::string> all = needles;
    all.push_back(path);
    expect_error_all<c10::Error>([&] { load_llama_config(path); }, all);
  };
  refuses(llama_with({{"architectures", {"GemmaForCausalLM"}}}),
          {"\"architectures\"", "GemmaForCausalLM", "LlamaForCausalLM"});
  refuses(llama_with({{"architectures", nullptr}, {"model_type", "gpt2"}}), {"\"model_type\"", "gpt2"});
  refuses(llama_with({{"hidden_size", nullptr}}), {"missing required key \"hidden_size\""});
  refuses(llama_with({{"hidden_size", "2048"}}), {"\"hidden_size\"", "must be an integer", "\"2048\""});
  refuses(llama_with({{"num_key_value_heads", 5}}), {"num_key_value_heads", "5"});
  refuses(llama_with({{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}}}),
          {"rope_type \"yarn\"", "linear, dynamic, llama3"});
  refuses(llama_with({{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}}}),
          {"missing required key \"low_freq_factor\"", "llama3"});
  refuses(llama_with({{"hidden_act", "gelu"}}), {"\"hidden_act\"", "gelu"});
  refuses(llama_with({{"torch_dtype", "int8"}}), {"\"torch_dtype\"", "int8"});
  refuses(llama_with({{"eos_token_id", "end"}}), {"\"eos_token_id\"", "\"end\""});
  refuses("{not json", {"not valid JSON"});
  expect_error_all<c10::Error>([&] { load_llama_config(dir.file("absent.json")); },
                               {dir.file("absent.json"), "cannot open"});
}

}  // namespace
}  // namespace lowbit::io
