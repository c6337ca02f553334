// A plain libtorch training loop (an MLP on Fashion-MNIST) in which the only
// lowbit line is the optimizer: put torch::optim::AdamW back in its place and
// nothing else changes. (The data comes from the examples' IDX reader because
// torch's MNIST dataset cannot read the gzip files Debian ships.)
//
//   minimal_loop [fashion-mnist dir] [epochs] [training images, 0 = all]
#include <torch/torch.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "examples/data/idx.h"
#include "examples/error_text.h"
#include "optim/optim.h"

int main(int argc, char** argv) {
  try {
    const std::string dir = argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist";
    const int epochs = argc > 2 ? std::atoi(argv[2]) : 2;
    const int64_t limit = argc > 3 ? std::atoll(argv[3]) : 0;
    const auto train = lowbit::data::load_fashion_mnist(dir, "train", limit);
    const auto test = lowbit::data::load_fashion_mnist(dir, "t10k");

    torch::manual_seed(0);
    torch::nn::Sequential model(torch::nn::Flatten(), torch::nn::Linear(784, 256),
                                torch::nn::ReLU(), torch::nn::Linear(256, 10));
    lowbit::optim::AdamW8bit optimizer(model->parameters(), lowbit::optim::AdamW8bitOptions(1e-3));

    const int64_t n = train.images.size(0), batch = 128;
    for (int epoch = 1; epoch <= epochs; ++epoch) {
      model->train();
      const torch::Tensor order = torch::randperm(n);
      double loss_sum = 0.0;
      for (int64_t begin = 0; begin < n; begin += batch) {
        const torch::Tensor rows = order.slice(0, begin, std::min(n, begin + batch));
        optimizer.zero_grad();
        const torch::Tensor loss = torch::cross_entropy_loss(
            model->forward(train.images.index_select(0, rows)), train.labels.index_select(0, rows));
        loss.backward();
        optimizer.step();
        loss_sum += loss.item<double>() * double(rows.numel());
      }
      torch::NoGradGuard no_grad;
      model->eval();
      const double accuracy = model->forward(test.images)
                                  .argmax(1)
                                  .eq(test.labels)
                                  .to(torch::kFloat64)
                                  .mean()
                                  .item<double>();
      std::cout << "epoch " << epoch << ": train loss " << loss_sum / double(n)
                << ", test accuracy " << 100.0 * accuracy << "%\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "minimal_loop: " << lowbit::error_text(e) << "\n";
    return 1;
  }
}
