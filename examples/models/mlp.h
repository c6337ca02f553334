// A multi-layer perceptron for 28x28 images (Fashion-MNIST): flatten, then
// Linear + ReLU (+ dropout) per hidden width, then a Linear head over 10
// classes. Linears are children "fc0", "fc1", ..., "head" (QLoRA can swap them).
#pragma once

#include <cstdint>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace lowbit::models {

class MlpClassifierImpl : public torch::nn::Module {
 public:
  MlpClassifierImpl(int64_t inputs, const std::vector<int64_t>& hidden, int64_t classes,
                    double dropout);
  torch::Tensor forward(const torch::Tensor& images);  // [B, ...] -> logits [B, classes]

 private:
  int64_t layers_;
  double dropout_;
};
TORCH_MODULE(MlpClassifier);

}  // namespace lowbit::models
