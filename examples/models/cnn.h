// A small convolutional network for 28x28 single-channel images: two blocks
// of 3x3 convolution + ReLU + 2x2 max-pooling, then Linear "fc" (128) + ReLU
// (+ dropout) and Linear "head" over the classes.
#pragma once

#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace lowbit::models {

class CnnClassifierImpl : public torch::nn::Module {
 public:
  CnnClassifierImpl(int64_t channels1, int64_t channels2, int64_t classes, double dropout);
  torch::Tensor forward(const torch::Tensor& images);  // [B, 1, 28, 28] -> logits [B, classes]

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  double dropout_;
};
TORCH_MODULE(CnnClassifier);

}  // namespace lowbit::models
