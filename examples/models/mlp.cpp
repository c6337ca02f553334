#include "examples/models/mlp.h"

#include <string>

#include <torch/nn/modules/linear.h>

#include "nn/linear_like.h"

namespace lowbit::models {

MlpClassifierImpl::MlpClassifierImpl(int64_t inputs, const std::vector<int64_t>& hidden,
                                     int64_t classes, double dropout)
    : layers_(int64_t(hidden.size())), dropout_(dropout) {
  TORCH_CHECK(inputs >= 1 && classes >= 2,
              "MlpClassifier: needs inputs >= 1 and classes >= 2, got ", inputs, " and ", classes);
  int64_t width = inputs;
  for (size_t i = 0; i < hidden.size(); ++i) {
    TORCH_CHECK(hidden[i] >= 1, "MlpClassifier: hidden width ", i, " is ", hidden[i]);
    register_module("fc" + std::to_string(i), torch::nn::Linear(width, hidden[i]));
    width = hidden[i];
  }
  register_module("head", torch::nn::Linear(width, classes));
}

torch::Tensor MlpClassifierImpl::forward(const torch::Tensor& images) {
  torch::Tensor x = images.flatten(1);
  for (int64_t i = 0; i < layers_; ++i) {
    x = torch::relu(nn::forward_linear(*this, "fc" + std::to_string(i), x));
    if (dropout_ > 0.0) x = torch::dropout(x, dropout_, is_training());
  }
  return nn::forward_linear(*this, "head", x);
}

}  // namespace lowbit::models
