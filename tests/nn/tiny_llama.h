// Test support for the Llama-family model: tiny random checkpoints written
// in Hugging Face layout (names and config keys spelled out here, apart from
// the library), and an independent reference forward pass that reads those
// files itself and computes in float64 with plain loops.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace lowbit::testing {

struct TinyLlamaSpec {
  std::string architecture = "LlamaForCausalLM";
  std::string model_type = "llama";
  // HF's rope_scaling object, or null.
  nlohmann::json rope_scaling = nullptr;
  bool tie_word_embeddings = false;
  // Llama's attention_bias key (q/k/v/o biases); Qwen2 gets q/k/v biases
  // whatever this says.
  bool attention_bias = false;
  torch::ScalarType dtype = torch::kFloat32;  // stored dtype
  uint64_t max_shard_bytes = 40'000;          // several shards for the sizes below
  int64_t vocab = 96, hidden = 64, intermediate = 128, layers = 2, heads = 4, kv_heads = 2;
  int64_t head_dim = 16, max_position_embeddings = 16;
  double rope_theta = 10000.0, rms_norm_eps = 1e-5;
  uint64_t seed = 1;
};

// config.json text for the spec.
nlohmann::json tiny_llama_config(const TinyLlamaSpec& spec);

// The tensors of the spec under HF names: N(0, 0.1) weights and biases, norm
// weights 1 + N(0, 0.1), so every part moves the logits.
std::map<std::string, torch::Tensor> tiny_llama_tensors(const TinyLlamaSpec& spec);

// Writes config.json and the tensors (stored as spec.dtype, sharded by
// spec.max_shard_bytes with an index) into `dir`.
void write_tiny_llama(const std::string& dir, const TinyLlamaSpec& spec);

// A forward pass written from the papers and transformers' documentation,
// not from the library: weights read by name from <dir>'s safetensors files
// (through the index when there is one) as float64, config.json read as
// plain JSON, its own RoPE tables, attention as a loop over heads and
// positions.
class ReferenceLlama {
 public:
  explicit ReferenceLlama(const std::string& dir);
  // Logits float64 [T, vocab] of one sequence at positions 0 .. T - 1.
  // key_mask (optional): false keys are never attended to.
  torch::Tensor logits(const std::vector<int64_t>& ids, const std::vector<bool>& key_mask = {}) const;
  // Replaces a weight (e.g. by its dequantized form).
  void set_weight(const std::string& name, const torch::Tensor& value);
  const std::map<std::string, torch::Tensor>& weights() const { return weights_; }

 private:
  torch::Tensor weight(const std::string& name) const;
  torch::Tensor linear(const std::string& path, const torch::Tensor& x) const;
  torch::Tensor rms_norm(const std::string& name, const torch::Tensor& x) const;
  torch::Tensor inverse_frequencies(int64_t seq_len) const;

  nlohmann::json config_;
  std::map<std::string, torch::Tensor> weights_;
};

}  // namespace lowbit::testing
