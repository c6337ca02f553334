#include "examples/models/linear_dispatch.h"

#include <torch/nn/modules/linear.h>

#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "lora/lora_linear.h"

namespace lowbit::models {

torch::Tensor forward_linear(torch::nn::Module& parent, const std::string& name,
                             const torch::Tensor& x) {
  const auto children = parent.named_children();
  const auto* child = children.find(name);
  TORCH_CHECK(child != nullptr, parent.name(), " has no child module '", name, "'");
  torch::nn::Module& module = **child;
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&module)) return linear->forward(x);
  if (auto* q = dynamic_cast<lora::Linear4bitImpl*>(&module)) return q->forward(x);
  if (auto* q8 = dynamic_cast<lora::Linear8bitImpl*>(&module)) return q8->forward(x);
  if (auto* adapter = dynamic_cast<lora::LoraLinearImpl*>(&module)) return adapter->forward(x);
  TORCH_CHECK(false, "child '", name, "' of ", parent.name(), " is a ", module.name(),
              ", which examples/models/linear_dispatch.cpp does not know how to call");
}

}  // namespace lowbit::models
