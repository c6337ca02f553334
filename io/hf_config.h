// Hugging Face config.json of the Llama family (LlamaForCausalLM, and
// MistralForCausalLM / Qwen2ForCausalLM, which share its decoder): read into a
// LlamaConfig with every key checked, and written back with HF's key names.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

namespace lowbit::io {

enum class LlamaFamily { Llama, Mistral, Qwen2 };

// HF's "architectures" entry and "model_type" of a family.
const char* architecture_name(LlamaFamily family);
const char* model_type_name(LlamaFamily family);

// RoPE frequency scaling (transformers' modeling_rope_utils.py, ROPE_INIT_FUNCTIONS).
enum class RopeType { Default, Linear, Dynamic, Llama3 };

struct RopeScaling {
  RopeType type = RopeType::Default;
  double factor = 1.0;
  // llama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

struct LlamaConfig {
  LlamaFamily family = LlamaFamily::Llama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  // Biases of q/k/v_proj, of o_proj and of the MLP. Llama: q/k/v/o follow
  // "attention_bias", the MLP "mlp_bias"; Qwen2 always has q/k/v biases and
  // no others; Mistral has none.
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  // HF's std of the normal initialisation of linear and embedding weights.
  double initializer_range = 0.02;
  // "torch_dtype" (or "dtype" in newer files): the weights' dtype on disk.
  std::optional<torch::ScalarType> torch_dtype;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // "eos_token_id": one id or a list
  std::optional<int64_t> pad_token_id;
  // Mistral's "sliding_window", Qwen2's when "use_sliding_window" is true.
  // The model attends to the full context, so it refuses sequences longer
  // than the window rather than computing something else.
  std::optional<int64_t> sliding_window;

  int64_t q_size() const { return num_attention_heads * head_dim; }
  int64_t kv_size() const { return num_key_value_heads * head_dim; }
  // Throws naming the field when values do not describe a model.
  void validate(const std::string& what = "LlamaConfig") const;
};

// Reads and validates <path> (a config.json). Errors name the file, the key
// and the value: unsupported architectures, missing required keys (vocab_size,
// hidden_size, intermediate_size, num_hidden_layers, num_attention_heads),
// values of the wrong type, rope scaling types other than linear, dynamic
// and llama3, activations other than silu. Other keys missing from the file
// take the defaults of the family's transformers config class, except that a
// missing sliding_window means none.
LlamaConfig load_llama_config(const std::string& path);

// The same from JSON text; `what` names the source in messages.
LlamaConfig parse_llama_config(const std::string& json_text, const std::string& what);

// config.json text for `config` with HF's keys (what save_pretrained writes
// for these fields), so transformers and load_llama_config read it back.
std::string to_config_json(const LlamaConfig& config);

}  // namespace lowbit::io
