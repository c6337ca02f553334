#include "nn/llama.h"

#include <limits>

#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>
#include <torch/version.h>

#include "nn/activation_checkpoint.h"
#include "nn/linear_like.h"

namespace lowbit::nn {
namespace {

// The parameters of `module` that need gradients: what a checkpointed
// recomputation must differentiate besides the layer's input.
std::vector<torch::Tensor> trainable(torch::nn::Module& module) {
  std::vector<torch::Tensor> out;
  for (const torch::Tensor& p : module.parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}

}  // namespace

LlamaWeights random_llama_weights(double std, torch::ScalarType dtype) {
  LlamaWeights w;
  w.tensor = [std, dtype](const std::string&, const std::vector<int64_t>& shape,
                          LlamaWeights::Init init) {
    return init == LlamaWeights::Init::Ones ? torch::ones(shape, torch::dtype(dtype))
                                            : (torch::randn(shape) * std).to(dtype);
  };
  w.linear = [std, dtype](const std::string&, int64_t in, int64_t out, bool bias) {
    torch::nn::Linear linear(torch::nn::LinearOptions(in, out).bias(bias));
    torch::NoGradGuard no_grad;
    torch::nn::init::normal_(linear->weight, 0.0, std);
    if (bias) torch::nn::init::zeros_(linear->bias);
    linear->to(dtype);
    return std::static_pointer_cast<torch::nn::Module>(linear.ptr());
  };
  return w;
}

LlamaAttentionImpl::LlamaAttentionImpl(const io::LlamaConfig& c, const std::string& path,
                                       const LlamaWeights& w)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
  register_module("q_proj", w.linear(path + ".q_proj", c.hidden_size, c.q_size(), c.qkv_bias));
  register_module("k_proj", w.linear(path + ".k_proj", c.hidden_size, c.kv_size(), c.qkv_bias));
  register_module("v_proj", w.linear(path + ".v_proj", c.hidden_size, c.kv_size(), c.qkv_bias));
  register_module("o_proj", w.linear(path + ".o_proj", c.q_size(), c.hidden_size, c.o_bias));
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const RotaryTables& rope,
                                          const torch::Tensor& attend, torch::Tensor* key_cache,
                                          torch::Tensor* value_cache) {
  const int64_t B = x.size(0), T = x.size(1), group = heads_ / kv_heads_;
  auto split_heads = [&](const torch::Tensor& t, int64_t heads) {
    return t.view({B, T, heads, head_dim_}).transpose(1, 2);
  };
  const torch::Tensor q = apply_rotary(split_heads(forward_linear(*this, "q_proj", x), heads_), rope);
  torch::Tensor k = apply_rotary(split_heads(forward_linear(*this, "k_proj", x), kv_heads_), rope);
  torch::Tensor v = split_heads(forward_linear(*this, "v_proj", x), kv_heads_);
  if (key_cache) {
    if (key_cache->defined()) {
      k = torch::cat({*key_cache, k}, 2);
      v = torch::cat({*value_cache, v}, 2);
    }
    *key_cache = k;
    *value_cache = v;
  }
  const int64_t S = k.size(2);
  // Grouped-query attention (Ainslie et al. 2023): query head h reads kv head
  // h / group, as transformers' repeat_kv arranges it. Folding a group's
  // queries into one matrix [group * T, head_dim] shares each kv head
  // without copying it `group` times.
  const torch::Tensor qg = q.reshape({B, kv_heads_, group * T, head_dim_});
  torch::Tensor scores = torch::matmul(qg, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(head_dim_)));
  // Masked in float32 with the lowest finite value, not -inf: a row with no
  // key to attend to (a padding query) then stays finite, as transformers'
  // min-value mask does; softmax in float32 as its eager attention.
  scores = scores.to(torch::kFloat32)
               .view({B, kv_heads_, group, T, S})
               .masked_fill(attend.logical_not().unsqueeze(1),
                            std::numeric_limits<float>::lowest());
  const torch::Tensor probs =
      scores.softmax(-1).to(x.scalar_type()).view({B, kv_heads_, group * T, S});
  const torch::Tensor out = torch::matmul(probs, v)
                                .view({B, heads_, T, head_dim_})
                                .transpose(1, 2)
                                .reshape({B, T, heads_ * head_dim_});
  return forward_linear(*this, "o_proj", out);
}

LlamaMLPImpl::LlamaMLPImpl(const io::LlamaConfig& c, const std::string& path, const LlamaWeights& w) {
  register_module("gate_proj", w.linear(path + ".gate_proj", c.hidden_size, c.intermediate_size, c.mlp_bias));
  register_module("up_proj", w.linear(path + ".up_proj", c.hidden_size, c.intermediate_size, c.mlp_bias));
  register_module("down_proj", w.linear(path + ".down_proj", c.intermediate_size, c.hidden_size, c.mlp_bias));
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x) {
  return forward_linear(*this, "down_proj",
                        torch::silu(forward_linear(*this, "gate_proj", x)) *
                            forward_linear(*this, "up_proj", x));
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const io::LlamaConfig& c, const std::string& path,
                                             const LlamaWeights& w) {
  // transformers' registration order, which is also its checkpoints' order.
  self_attn_ = register_module("self_attn", LlamaAttention(c, path + ".self_attn", w));
  mlp_ = register_module("mlp", LlamaMLP(c, path + ".mlp", w));
  const auto ones = LlamaWeights::Init::Ones;
  input_layernorm_ = register_module(
      "input_layernorm",
      RMSNorm(w.tensor(path + ".input_layernorm.weight", {c.hidden_size}, ones), c.rms_norm_eps));
  post_attention_layernorm_ = register_module(
      "post_attention_layernorm",
      RMSNorm(w.tensor(path + ".post_attention_layernorm.weight", {c.hidden_size}, ones),
              c.rms_norm_eps));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const RotaryTables& rope,
                                             const torch::Tensor& attend, torch::Tensor* key_cache,
                                             torch::Tensor* value_cache) {
  const torch::Tensor h =
      x + self_attn_->forward(input_layernorm_->forward(x), rope, attend, key_cache, value_cache);
  return h + mlp_->forward(post_attention_layernorm_->forward(h));
}

LlamaModelImpl::LlamaModelImpl(const io::LlamaConfig& c, const LlamaWeights& w) : config_(c) {
  torch::nn::EmbeddingOptions options(c.vocab_size, c.hidden_size);
  options._weight(w.tensor("model.embed_tokens.weight", {c.vocab_size, c.hidden_size},
                           LlamaWeights::Init::Normal));
  // transformers builds nn.Embedding(..., padding_idx=pad_token_id): that
  // row receives no gradient.
  if (c.pad_token_id && *c.pad_token_id >= 0 && *c.pad_token_id < c.vocab_size)
    options.padding_idx(*c.pad_token_id);
  embed_tokens_ = register_module("embed_tokens", torch::nn::Embedding(options));
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    layers_->push_back(LlamaDecoderLayer(c, "model.layers." + std::to_string(i), w));
  norm_ = register_module(
      "norm", RMSNorm(w.tensor("model.norm.weight", {c.hidden_size}, LlamaWeights::Init::Ones),
                      c.rms_norm_eps));
}

torch::Tensor LlamaModelImpl::forward(const torch::Tensor& ids, LlamaKVCache* cache,
                                      const torch::Tensor& attention_mask) {
  const torch::Tensor& table = embed_tokens_->weight;
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == torch::kInt64 && ids.size(1) >= 1,
              "LlamaForCausalLM: input_ids must be int64 [batch, time >= 1], got ",
              ids.scalar_type(), " ", ids.sizes());
  TORCH_CHECK(ids.device() == table.device(), "LlamaForCausalLM: input_ids are on ", ids.device(),
              " but the model is on ", table.device());
  TORCH_CHECK(ids.min().item<int64_t>() >= 0 && ids.max().item<int64_t>() < config_.vocab_size,
              "LlamaForCausalLM: token ids must be in [0, vocab_size = ", config_.vocab_size, ")");
#if TORCH_VERSION_MAJOR < 2
  TORCH_CHECK(table.scalar_type() != torch::kFloat16 || !table.device().is_cpu(),
              "LlamaForCausalLM: float16 weights need a CUDA device with this libtorch (",
              TORCH_VERSION, " has no float16 matmul on the CPU); load in bfloat16 or float32");
#endif
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t past = cache ? cache->length() : 0, S = past + T;
  TORCH_CHECK(!config_.sliding_window || S <= *config_.sliding_window, "LlamaForCausalLM: ", S,
              " positions exceed the config's sliding_window of ", *config_.sliding_window,
              "; sliding-window attention is not implemented, so longer sequences are refused");
  const auto on_device = torch::TensorOptions(torch::kInt64).device(ids.device());
  // Query t (position past + t) attends to keys 0 .. past + t.
  torch::Tensor attend = torch::arange(S, on_device).unsqueeze(0) <=
                         torch::arange(past, S, on_device).unsqueeze(1);
  attend = attend.view({1, 1, T, S});
  if (attention_mask.defined()) {
    TORCH_CHECK(attention_mask.dim() == 2 && attention_mask.size(0) == B &&
                    attention_mask.size(1) == S,
                "LlamaForCausalLM: attention_mask must be [batch, cached + new positions] = [", B,
                ", ", S, "], got ", attention_mask.sizes());
    attend = attend & attention_mask.to(ids.device(), torch::kBool).view({B, 1, 1, S});
  }
  if (cache) {
    cache->keys.resize(size_t(config_.num_hidden_layers));
    cache->values.resize(size_t(config_.num_hidden_layers));
  }
  const RotaryTables rope = rotary_tables(config_, past, T, table.scalar_type(), ids.device());
  torch::Tensor x = embed_tokens_->forward(ids);
  const bool checkpoint = gradient_checkpointing_ && !cache && is_training() &&
                          torch::GradMode::is_enabled();
  for (size_t i = 0; i < layers_->size(); ++i) {
    auto layer = layers_->ptr<LlamaDecoderLayerImpl>(i);
    if (checkpoint) {
      x = checkpointed(
          [layer, rope, attend](const torch::Tensor& input) {
            return layer->forward(input, rope, attend);
          },
          x, trainable(*layer));
    } else {
      x = layer->forward(x, rope, attend, cache ? &cache->keys[i] : nullptr,
                         cache ? &cache->values[i] : nullptr);
    }
  }
  return norm_->forward(x);
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const io::LlamaConfig& config)
    : LlamaForCausalLMImpl(config, random_llama_weights(config.initializer_range)) {}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const io::LlamaConfig& config, const LlamaWeights& weights)
    : config_(config) {
  config_.validate("LlamaForCausalLM");
  model_ = register_module("model", LlamaModel(config_, weights));
  if (!config_.tie_word_embeddings)
    register_module("lm_head", weights.linear("lm_head", config_.hidden_size, config_.vocab_size,
                                              /*bias=*/false));
}

torch::Tensor LlamaForCausalLMImpl::hidden_states(const torch::Tensor& input_ids, LlamaKVCache* cache,
                                                  const torch::Tensor& attention_mask) {
  return model_->forward(input_ids, cache, attention_mask);
}

torch::Tensor LlamaForCausalLMImpl::logits(const torch::Tensor& hidden) {
  if (config_.tie_word_embeddings) return torch::matmul(hidden, model_->embed_tokens()->weight.t());
  return forward_linear(*this, "lm_head", hidden);
}

torch::Tensor LlamaForCausalLMImpl::forward(const torch::Tensor& input_ids,
                                            const torch::Tensor& attention_mask) {
  return logits(hidden_states(input_ids, nullptr, attention_mask));
}

torch::Tensor LlamaForCausalLMImpl::forward(const torch::Tensor& input_ids, LlamaKVCache& cache,
                                            const torch::Tensor& attention_mask) {
  return logits(hidden_states(input_ids, &cache, attention_mask));
}

torch::ScalarType LlamaForCausalLMImpl::dtype() const {
  return model_->embed_tokens()->weight.scalar_type();
}

torch::Device LlamaForCausalLMImpl::device() const {
  return model_->embed_tokens()->weight.device();
}

}  // namespace lowbit::nn
