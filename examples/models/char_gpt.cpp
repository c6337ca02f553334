#include "examples/models/char_gpt.h"

#include <cmath>
#include <limits>
#include <string>

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>

#include "nn/linear_like.h"

namespace lowbit::models {
namespace {

void check_options(const CharGPTOptions& o) {
  TORCH_CHECK(o.vocab_size() >= 2, "CharGPT: vocab_size must be at least 2, got ", o.vocab_size());
  TORCH_CHECK(o.block_size() >= 1, "CharGPT: block_size must be positive, got ", o.block_size());
  TORCH_CHECK(o.n_layer() >= 1, "CharGPT: n_layer must be positive, got ", o.n_layer());
  TORCH_CHECK(o.n_head() >= 1 && o.n_embd() % o.n_head() == 0, "CharGPT: n_embd (", o.n_embd(),
              ") must be a positive multiple of n_head (", o.n_head(), ")");
  TORCH_CHECK(o.dropout() >= 0.0 && o.dropout() < 1.0, "CharGPT: dropout must be in [0, 1), got ",
              o.dropout());
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

torch::Tensor maybe_dropout(const torch::Tensor& x, double p, bool training) {
  return p > 0.0 ? torch::dropout(x, p, training) : x;
}

}  // namespace

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const CharGPTOptions& o)
    : n_head_(o.n_head()), dropout_(o.dropout()) {
  register_module("qkv", torch::nn::Linear(o.n_embd(), 3 * o.n_embd()));
  register_module("proj", torch::nn::Linear(o.n_embd(), o.n_embd()));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), hd = C / n_head_;
  const auto qkv = nn::forward_linear(*this, "qkv", x).split(C, -1);
  auto heads = [&](const torch::Tensor& t) { return t.view({B, T, n_head_, hd}).transpose(1, 2); };
  const torch::Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
  // Scaled dot-product attention (Vaswani et al. 2017) with a causal mask:
  // position t attends to positions <= t only.
  const torch::Tensor future =
      torch::ones({T, T}, torch::TensorOptions(torch::kBool).device(x.device())).triu(1);
  torch::Tensor att = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(hd));
  att = att.masked_fill(future, -std::numeric_limits<float>::infinity()).softmax(-1);
  att = maybe_dropout(att, dropout_, is_training());
  const torch::Tensor y = torch::matmul(att, v).transpose(1, 2).reshape({B, T, C});
  return maybe_dropout(nn::forward_linear(*this, "proj", y), dropout_, is_training());
}

MlpImpl::MlpImpl(const CharGPTOptions& o) : dropout_(o.dropout()) {
  register_module("fc1", torch::nn::Linear(o.n_embd(), 4 * o.n_embd()));
  register_module("fc2", torch::nn::Linear(4 * o.n_embd(), o.n_embd()));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  const torch::Tensor h = torch::gelu(nn::forward_linear(*this, "fc1", x));
  return maybe_dropout(nn::forward_linear(*this, "fc2", h), dropout_, is_training());
}

BlockImpl::BlockImpl(const CharGPTOptions& o)
    : ln1_(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.n_embd()})))),
      ln2_(register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.n_embd()})))),
      attn_(register_module("attn", CausalSelfAttention(o))),
      mlp_(register_module("mlp", Mlp(o))) {}

torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  const torch::Tensor h = x + attn_->forward(ln1_->forward(x));
  return h + mlp_->forward(ln2_->forward(h));
}

CharGPTImpl::CharGPTImpl(const CharGPTOptions& options) : options_(options) {
  check_options(options_);
  const int64_t d = options_.n_embd();
  tok_emb_ = register_module("tok_emb", torch::nn::Embedding(options_.vocab_size(), d));
  pos_emb_ = register_module("pos_emb", torch::nn::Embedding(options_.block_size(), d));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < options_.n_layer(); ++i) blocks_->push_back(Block(options_));
  ln_f_ = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  register_module(
      "lm_head", torch::nn::Linear(torch::nn::LinearOptions(d, options_.vocab_size()).bias(false)));

  // GPT-2's initialisation (Radford et al. 2019, section 2.3): residual
  // projections scaled by 1/√N for N residual layers (2 per block).
  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * double(options_.n_layer()));
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (auto* linear = item.value()->as<torch::nn::Linear>()) {
      const bool residual = ends_with(item.key(), ".proj") || ends_with(item.key(), ".fc2");
      torch::nn::init::normal_(linear->weight, 0.0, residual ? residual_std : 0.02);
      if (linear->bias.defined()) torch::nn::init::zeros_(linear->bias);
    } else if (auto* embedding = item.value()->as<torch::nn::Embedding>()) {
      torch::nn::init::normal_(embedding->weight, 0.0, 0.02);
    }
  }
}

torch::Tensor CharGPTImpl::forward(const torch::Tensor& ids) {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == torch::kInt64,
              "CharGPT: ids must be int64 [batch, time], got ", ids.sizes(), " ",
              ids.scalar_type());
  const int64_t T = ids.size(1);
  TORCH_CHECK(T >= 1 && T <= options_.block_size(), "CharGPT: sequence length ", T,
              " must be in [1, block_size = ", options_.block_size(), "]");
  TORCH_CHECK(ids.min().item<int64_t>() >= 0 && ids.max().item<int64_t>() < options_.vocab_size(),
              "CharGPT: token ids must be in [0, ", options_.vocab_size(), ")");
  const torch::Tensor positions =
      torch::arange(T, torch::TensorOptions(torch::kInt64).device(ids.device()));
  torch::Tensor x = tok_emb_->forward(ids) + pos_emb_->forward(positions);
  x = maybe_dropout(x, options_.dropout(), is_training());
  for (const auto& block : *blocks_) x = block->as<Block>()->forward(x);
  return nn::forward_linear(*this, "lm_head", ln_f_->forward(x));
}

}  // namespace lowbit::models
