// Test support for lora/: a small model that calls its layers by name
// through the module registry (what quantize_model / apply_lora require),
// and helpers shared by the lora tests.
#pragma once

#include <string>

#include <torch/torch.h>

#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "lora/lora_linear.h"

namespace lowbit::testing {

// Runs child `name` of `parent`, whichever linear-like layer it is now.
inline torch::Tensor call_layer(torch::nn::Module& parent, const std::string& name,
                                const torch::Tensor& x) {
  const auto child = parent.named_children()[name];
  if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(child.get())) return l->forward(x);
  if (auto* q = dynamic_cast<lora::Linear4bitImpl*>(child.get())) return q->forward(x);
  if (auto* q8 = dynamic_cast<lora::Linear8bitImpl*>(child.get())) return q8->forward(x);
  if (auto* a = dynamic_cast<lora::LoraLinearImpl*>(child.get())) return a->forward(x);
  TORCH_CHECK(false, "call_layer: child '", name, "' is a ", child->name());
}

// fc1 -> gelu -> fc2, as a transformer block's MLP.
struct MlpImpl : torch::nn::Module {
  MlpImpl(int64_t d, int64_t hidden) {
    register_module("fc1", torch::nn::Linear(d, hidden));
    register_module("fc2", torch::nn::Linear(hidden, d));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return call_layer(*this, "fc2", torch::gelu(call_layer(*this, "fc1", x)));
  }
};
TORCH_MODULE(Mlp);

// in_proj -> norm -> mlp (residual) -> lm_head: linears at several
// depths, a LayerNorm (parameters that stay float) and a bias-free head.
struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl(int64_t in, int64_t d, int64_t out) {
    register_module("in_proj", torch::nn::Linear(in, d));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    register_module("mlp", Mlp(d, 2 * d + 3));
    register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(d, out).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = norm(call_layer(*this, "in_proj", x));
    h = h + named_children()["mlp"]->as<Mlp>()->forward(h);
    return call_layer(*this, "lm_head", h);
  }
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(TinyNet);

}  // namespace lowbit::testing
