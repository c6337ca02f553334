// A small character-level GPT (decoder-only transformer, pre-LayerNorm as in
// GPT-2): token + learned position embeddings, causal multi-head
// self-attention, a GELU MLP, a final LayerNorm and a linear head. Every matrix
// is a torch::nn::Linear named like `blocks.0.attn.qkv`, `blocks.0.attn.proj`,
// `blocks.0.mlp.fc1`, `blocks.0.mlp.fc2`, `lm_head`, so QLoRA can swap them.
#pragma once

#include <cstdint>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace lowbit::models {

struct CharGPTOptions {
  TORCH_ARG(int64_t, vocab_size) = 97;   // data::CharVocab::kSize
  TORCH_ARG(int64_t, block_size) = 128;  // longest context (position table size)
  TORCH_ARG(int64_t, n_layer) = 4;
  TORCH_ARG(int64_t, n_head) = 4;
  TORCH_ARG(int64_t, n_embd) = 128;
  TORCH_ARG(double, dropout) = 0.0;  // on attention weights and both residual branches
};

// Children "qkv" (n_embd -> 3·n_embd) and "proj" (n_embd -> n_embd).
class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit CausalSelfAttentionImpl(const CharGPTOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // [B, T, n_embd] -> same

 private:
  int64_t n_head_;
  double dropout_;
};
TORCH_MODULE(CausalSelfAttention);

// Children "fc1" (n_embd -> 4·n_embd), GELU, "fc2" (4·n_embd -> n_embd).
class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const CharGPTOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  double dropout_;
};
TORCH_MODULE(Mlp);

// x + attn(ln1(x)), then + mlp(ln2(x)).
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const CharGPTOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::LayerNorm ln1_{nullptr}, ln2_{nullptr};
  CausalSelfAttention attn_{nullptr};
  Mlp mlp_{nullptr};
};
TORCH_MODULE(Block);

class CharGPTImpl : public torch::nn::Module {
 public:
  // Weights start as in GPT-2: N(0, 0.02), residual projections (attn.proj,
  // mlp.fc2) scaled by 1/√(2·n_layer), zero biases, LayerNorm (1, 0). Uses
  // torch's default generator: seed it first for a reproducible model.
  explicit CharGPTImpl(const CharGPTOptions& options = {});

  // ids: int64 [B, T] on the model's device, T <= block_size -> logits float32
  // [B, T, vocab_size].
  torch::Tensor forward(const torch::Tensor& ids);

  const CharGPTOptions& options() const { return options_; }

 private:
  CharGPTOptions options_;
  torch::nn::Embedding tok_emb_{nullptr}, pos_emb_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm ln_f_{nullptr};
};
TORCH_MODULE(CharGPT);

}  // namespace lowbit::models
