#include "examples/models/linear_dispatch.h"

#include <torch/nn/modules/linear.h>

namespace lowbit::models {

torch::Tensor forward_linear(torch::nn::Module& parent, const std::string& name,
                             const torch::Tensor& x) {
  const auto children = parent.named_children();
  const auto* child = children.find(name);
  TORCH_CHECK(child != nullptr, parent.name(), " has no child module '", name, "'");
  torch::nn::Module& module = **child;
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&module)) return linear->forward(x);
  TORCH_CHECK(false, "child '", name, "' of ", parent.name(), " is a ", module.name(),
              ", which examples/models/linear_dispatch.cpp does not know how to call");
}

}  // namespace lowbit::models
