// The Llama decoder (Touvron et al. 2023) with Hugging Face's module and
// parameter names, so checkpoints, PEFT target_modules and adapter keys mean
// the same here: model.embed_tokens, model.layers.<i>.self_attn.{q,k,v,o}_proj,
// model.layers.<i>.mlp.{gate,up,down}_proj, model.layers.<i>.input_layernorm,
// .post_attention_layernorm, model.norm, lm_head (absent with tied
// embeddings). Mistral and Qwen2 checkpoints use the same decoder. Linear
// layers are called through the module registry (nn::forward_linear), so
// quantize_model / apply_lora swapping them take effect.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "io/hf_config.h"
#include "nn/rms_norm.h"
#include "nn/rotary.h"

namespace lowbit::nn {

// Where a model's weights come from while it is built: the constructor asks
// for each tensor and linear layer by its Hugging Face name, in module order,
// so a loader can read (and quantize) one at a time.
struct LlamaWeights {
  enum class Init { Normal, Ones };
  // The parameter `name` (e.g. "model.norm.weight") of `shape`; `init` says
  // how a fresh model starts it.
  std::function<torch::Tensor(const std::string& name, const std::vector<int64_t>& shape, Init init)>
      tensor;
  // The layer at module path `path` (e.g. "model.layers.0.self_attn.q_proj"):
  // a torch::nn::Linear, lora::Linear4bit or lora::LoraLinear of in -> out.
  std::function<std::shared_ptr<torch::nn::Module>(const std::string& path, int64_t in,
                                                   int64_t out, bool bias)>
      linear;
};

// transformers' initialisation (LlamaPreTrainedModel._init_weights): weights
// N(0, std), biases zero, norms one, in `dtype`. Draws from torch's default
// generator: seed it for a reproducible model.
LlamaWeights random_llama_weights(double std, torch::ScalarType dtype = torch::kFloat32);

// Keys and values of every layer's attention for the positions seen so far
// (after RoPE, as transformers' DynamicCache): [B, kv_heads, length, head_dim].
struct LlamaKVCache {
  std::vector<torch::Tensor> keys;
  std::vector<torch::Tensor> values;
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
};

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const io::LlamaConfig& config, const std::string& path,
                     const LlamaWeights& weights);
  // x [B, T, hidden]; `attend` bool [B or 1, 1, T, S] (S = cached + T): may
  // query t attend to key s. Appends this call's keys and values to
  // key_cache / value_cache when they are given.
  torch::Tensor forward(const torch::Tensor& x, const RotaryTables& rope,
                        const torch::Tensor& attend, torch::Tensor* key_cache = nullptr,
                        torch::Tensor* value_cache = nullptr);

 private:
  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(LlamaAttention);

// SwiGLU (Shazeer 2020): down(silu(gate(x)) * up(x)).
class LlamaMLPImpl : public torch::nn::Module {
 public:
  LlamaMLPImpl(const io::LlamaConfig& config, const std::string& path, const LlamaWeights& weights);
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(LlamaMLP);

// Pre-norm residual block: h = x + attn(norm1(x)); h + mlp(norm2(h)).
class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const io::LlamaConfig& config, const std::string& path,
                        const LlamaWeights& weights);
  torch::Tensor forward(const torch::Tensor& x, const RotaryTables& rope,
                        const torch::Tensor& attend, torch::Tensor* key_cache = nullptr,
                        torch::Tensor* value_cache = nullptr);

 private:
  RMSNorm input_layernorm_{nullptr}, post_attention_layernorm_{nullptr};
  LlamaAttention self_attn_{nullptr};
  LlamaMLP mlp_{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// transformers' LlamaModel: embeddings, decoder layers, final norm.
class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const io::LlamaConfig& config, const LlamaWeights& weights);
  // input_ids int64 [B, T] -> final hidden states [B, T, hidden] (see
  // LlamaForCausalLMImpl::hidden_states).
  torch::Tensor forward(const torch::Tensor& input_ids, LlamaKVCache* cache,
                        const torch::Tensor& attention_mask);

  const torch::nn::Embedding& embed_tokens() const { return embed_tokens_; }
  void set_gradient_checkpointing(bool enabled) { gradient_checkpointing_ = enabled; }

 private:
  io::LlamaConfig config_;
  torch::nn::Embedding embed_tokens_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  RMSNorm norm_{nullptr};
  bool gradient_checkpointing_ = false;
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  // A fresh model: random_llama_weights(config.initializer_range).
  explicit LlamaForCausalLMImpl(const io::LlamaConfig& config);
  LlamaForCausalLMImpl(const io::LlamaConfig& config, const LlamaWeights& weights);

  // input_ids int64 [B, T] on the model's device -> logits [B, T, vocab] in
  // the model's dtype. attention_mask (optional) [B, T] of 0/1 or bool:
  // keys at 0 are not attended to (padding); positions are 0 .. T - 1
  // regardless, as in transformers when no position_ids are given.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {});
  // The same continuing `cache` (positions start at cache.length(), which
  // grows by T); attention_mask then covers the cached positions too:
  // [B, cache.length() + T].
  torch::Tensor forward(const torch::Tensor& input_ids, LlamaKVCache& cache,
                        const torch::Tensor& attention_mask = {});

  // The final hidden states [B, T, hidden], and the head applied to them
  // (lm_head, or the embedding matrix when tied): generation computes logits
  // for the last position only.
  torch::Tensor hidden_states(const torch::Tensor& input_ids, LlamaKVCache* cache,
                              const torch::Tensor& attention_mask = {});
  torch::Tensor logits(const torch::Tensor& hidden);

  const io::LlamaConfig& config() const { return config_; }
  // The dtype of activations: the embeddings'.
  torch::ScalarType dtype() const;
  torch::Device device() const;

  // Activation checkpointing of each decoder layer in training forwards
  // without a cache: a layer keeps only its input, and backward recomputes
  // it (see nn/activation_checkpoint.h).
  void set_gradient_checkpointing(bool enabled) { model_->set_gradient_checkpointing(enabled); }

 private:
  io::LlamaConfig config_;
  LlamaModel model_{nullptr};
};
TORCH_MODULE(LlamaForCausalLM);

}  // namespace lowbit::nn
