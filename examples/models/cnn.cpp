#include "examples/models/cnn.h"

#include <torch/nn/modules/linear.h>

#include "nn/linear_like.h"

namespace lowbit::models {

CnnClassifierImpl::CnnClassifierImpl(int64_t channels1, int64_t channels2, int64_t classes,
                                     double dropout)
    : dropout_(dropout) {
  TORCH_CHECK(channels1 >= 1 && channels2 >= 1 && classes >= 2,
              "CnnClassifier: channels must be positive and classes >= 2, got ", channels1, ", ",
              channels2, ", ", classes);
  conv1_ = register_module("conv1",
                           torch::nn::Conv2d(torch::nn::Conv2dOptions(1, channels1, 3).padding(1)));
  conv2_ = register_module(
      "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels1, channels2, 3).padding(1)));
  // Two 2x2 poolings take 28x28 to 7x7.
  register_module("fc", torch::nn::Linear(channels2 * 7 * 7, 128));
  register_module("head", torch::nn::Linear(128, classes));
}

torch::Tensor CnnClassifierImpl::forward(const torch::Tensor& images) {
  TORCH_CHECK(
      images.dim() == 4 && images.size(1) == 1 && images.size(2) == 28 && images.size(3) == 28,
      "CnnClassifier: images must be [batch, 1, 28, 28], got ", images.sizes());
  torch::Tensor x = torch::max_pool2d(torch::relu(conv1_->forward(images)), 2);
  x = torch::max_pool2d(torch::relu(conv2_->forward(x)), 2).flatten(1);
  x = torch::relu(nn::forward_linear(*this, "fc", x));
  if (dropout_ > 0.0) x = torch::dropout(x, dropout_, is_training());
  return nn::forward_linear(*this, "head", x);
}

}  // namespace lowbit::models
