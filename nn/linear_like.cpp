#include "nn/linear_like.h"

#include <torch/nn/modules/linear.h>

#include "lora/in_place_layer.h"
#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "lora/lora_linear.h"

namespace lowbit::nn {

torch::Tensor forward_linear(torch::nn::Module& layer, const torch::Tensor& x) {
  torch::nn::Module& module = lora::layer_impl(layer);
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&module)) return linear->forward(x);
  if (auto* q = dynamic_cast<lora::Linear4bitImpl*>(&module)) return q->forward(x);
  if (auto* q8 = dynamic_cast<lora::Linear8bitImpl*>(&module)) return q8->forward(x);
  if (auto* adapter = dynamic_cast<lora::LoraLinearImpl*>(&module)) return adapter->forward(x);
  TORCH_CHECK(false, "forward_linear: ", layer.name(), " is a ", module.name(),
              "; expected torch::nn::Linear, lowbit::lora::Linear4bit, lowbit::lora::Linear8bit "
              "or lowbit::lora::LoraLinear");
}

torch::Tensor forward_linear(torch::nn::Module& parent, const std::string& name,
                             const torch::Tensor& x) {
  const auto children = parent.named_children();
  const auto* child = children.find(name);
  TORCH_CHECK(child != nullptr, parent.name(), " has no child module '", name, "'");
  TORCH_CHECK(is_linear_like(**child), "child '", name, "' of ", parent.name(), " is a ",
              (*child)->name(), "; expected torch::nn::Linear, lowbit::nn::Linear, ",
              "lowbit::lora::Linear4bit, lowbit::lora::Linear8bit or lowbit::lora::LoraLinear");
  return forward_linear(**child, x);
}

bool is_linear_like(const torch::nn::Module& layer) {
  const torch::nn::Module& module = lora::layer_impl(layer);
  return dynamic_cast<const torch::nn::LinearImpl*>(&module) != nullptr ||
         dynamic_cast<const lora::Linear4bitImpl*>(&module) != nullptr ||
         dynamic_cast<const lora::Linear8bitImpl*>(&module) != nullptr ||
         dynamic_cast<const lora::LoraLinearImpl*>(&module) != nullptr;
}

LinearShape linear_shape(torch::nn::Module& layer) {
  torch::nn::Module& module = lora::layer_impl(layer);
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&module))
    return {linear->options.in_features(), linear->options.out_features(), linear->bias.defined()};
  if (auto* q = dynamic_cast<lora::Linear4bitImpl*>(&module))
    return {q->in_features(), q->out_features(), q->bias.defined()};
  if (auto* q8 = dynamic_cast<lora::Linear8bitImpl*>(&module))
    return {q8->in_features(), q8->out_features(), q8->bias.defined()};
  if (auto* adapter = dynamic_cast<lora::LoraLinearImpl*>(&module))
    return linear_shape(*adapter->base_layer());
  TORCH_CHECK(false, "linear_shape: ", module.name(),
              " is not torch::nn::Linear, lowbit::lora::Linear4bit, lowbit::lora::Linear8bit or "
              "lowbit::lora::LoraLinear");
}

DenseLinear dense_linear(torch::nn::Module& layer) {
  torch::nn::Module& module = lora::layer_impl(layer);
  torch::NoGradGuard no_grad;
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&module))
    return {linear->weight.detach(),
            linear->bias.defined() ? linear->bias.detach() : torch::Tensor()};
  if (auto* q = dynamic_cast<lora::Linear4bitImpl*>(&module))
    return {q->dequantized_weight(), q->bias.defined() ? q->bias.detach() : torch::Tensor()};
  if (auto* q8 = dynamic_cast<lora::Linear8bitImpl*>(&module))
    return {q8->dequantized_weight(), q8->bias.defined() ? q8->bias.detach() : torch::Tensor()};
  if (auto* adapter = dynamic_cast<lora::LoraLinearImpl*>(&module)) {
    DenseLinear base = dense_linear(*adapter->base_layer());
    if (!adapter->merged())
      base.weight = (base.weight.to(torch::kFloat32) +
                     adapter->delta_weight().to(base.weight.device()))
                        .to(base.weight.scalar_type());
    return base;
  }
  TORCH_CHECK(false, "dense_linear: ", module.name(),
              " is not torch::nn::Linear, lowbit::lora::Linear4bit, lowbit::lora::Linear8bit or "
              "lowbit::lora::LoraLinear");
}

}  // namespace lowbit::nn
