// Each 8-bit optimizer trains a small real model (an MLP on a Fashion-MNIST
// subset, from Debian's dataset-fashion-mnist) to a held-out loss within 2%
// of the same run with 32-bit states.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "examples/data/idx.h"
#include "optim/optim.h"
#include "tests/optim/optim_test_util.h"

namespace lowbit {
namespace {

using testing::Kind;

const char* kFashionMnist = "/usr/share/datasets/fashion-mnist";

struct Data {
  data::ImageSet train, eval;
};

const Data& fashion_mnist() {
  static const Data d{data::load_fashion_mnist(kFashionMnist, "train", 3000),
                      data::load_fashion_mnist(kFashionMnist, "t10k", 1000)};
  return d;
}

struct Mlp : torch::nn::Module {
  // 784 x 128 = 100352 weights: 8-bit states; the rest is below min_8bit_size.
  Mlp()
      : fc1(register_module("fc1", torch::nn::Linear(784, 128))),
        fc2(register_module("fc2", torch::nn::Linear(128, 10))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return fc2(torch::relu(fc1(x.view({x.size(0), 784}))));
  }
  torch::nn::Linear fc1, fc2;
};

// Learning rates in each optimizer's usual range (Lion: ~10x below Adam's, as
// its paper recommends; LAMB: layer-wise trust ratios allow larger ones).
double learning_rate(Kind kind) {
  switch (kind) {
    case Kind::Lion: return 3e-4;
    case Kind::LAMB: return 1e-2;
    default: return 1e-3;
  }
}

// Trains from a fixed initialisation on a fixed batch order; returns the
// held-out cross-entropy at the end (and the one at the start).
std::pair<double, double> train(Kind kind, int64_t optim_bits) {
  const Data& d = fashion_mnist();
  torch::manual_seed(0);
  Mlp model;
  testing::Setup s;
  s.optim_bits = optim_bits;
  s.lr = learning_rate(kind);
  s.momentum = 0.0;
  auto opt = testing::make_optimizer(kind, model.parameters(), s);
  const auto eval_loss = [&] {
    torch::NoGradGuard no_grad;
    return torch::nn::functional::cross_entropy(model.forward(d.eval.images), d.eval.labels)
        .item<double>();
  };
  const double initial = eval_loss();
  const int64_t batch = 100, n = d.train.images.size(0);
  for (int epoch = 0; epoch < 4; ++epoch) {
    torch::manual_seed(epoch);
    const auto order = torch::randperm(n);
    for (int64_t i = 0; i + batch <= n; i += batch) {
      const auto idx = order.slice(0, i, i + batch);
      opt->zero_grad();
      torch::nn::functional::cross_entropy(model.forward(d.train.images.index_select(0, idx)),
                                           d.train.labels.index_select(0, idx))
          .backward();
      opt->step();
    }
  }
  return {eval_loss(), initial};
}

TEST(Training, EightBitReachesTheThirtyTwoBitLossOnFashionMnist) {
  for (Kind kind : testing::all_kinds()) {
    const auto [loss8, initial] = train(kind, 8);
    const auto [loss32, initial32] = train(kind, 32);
    const std::string name = testing::kind_name(kind);
    std::printf("%s: held-out loss %.4f -> 8-bit %.4f, 32-bit %.4f (%+.2f%%)\n", name.c_str(),
                initial, loss8, loss32, 100 * (loss8 - loss32) / loss32);
    EXPECT_EQ(initial, initial32) << name;
    EXPECT_LT(loss32, 0.6 * initial) << name << ": the model must actually train";
    EXPECT_LE(std::abs(loss8 - loss32), 0.02 * loss32) << name;
  }
}

}  // namespace
}  // namespace lowbit
