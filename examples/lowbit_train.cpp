// lowbit-train, first stage: loads the default recipe's real data set
// (Fashion-MNIST from Debian's dataset-fashion-mnist), quantizes the training
// images to NF4, FP4 and 8-bit, and reports error and storage. The YAML
// trainer replaces this body (see the trainer issue).
#include <torch/torch.h>

#include <iostream>

#include "examples/data/idx.h"
#include "quant/metrics.h"
#include "quant/quantize.h"

int main(int argc, char** argv) {
  using namespace lowbit;
  try {
    const std::string dir = argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist";
    const data::ImageSet train = data::load_fashion_mnist(dir, "train");
    const torch::Tensor x = train.images.reshape({train.images.size(0), -1}) - 0.5f;
    std::cout << "Fashion-MNIST train: " << x.size(0) << " images, " << x.numel()
              << " values (centred pixels)\n";
    for (quant::Format f : {quant::Format::NF4, quant::Format::FP4}) {
      quant::Quantize4bitOptions o;
      o.format = f;
      auto [packed, state] = quant::quantize_4bit(x, o);
      const auto err = quant::error_report(x, quant::dequantize_4bit(packed, state));
      std::cout << quant::format_info(f).name << " (block 64, double quant): " << err.to_string()
                << "\n  " << quant::storage_report(packed, state).to_string() << "\n";
    }
    quant::BlockwiseOptions o8;
    o8.blocksize = 256;
    auto [codes, state8] = quant::quantize_blockwise(x, o8);
    std::cout << "dynamic 8-bit (block 256): "
              << quant::error_report(x, quant::dequantize_blockwise(codes, state8)).to_string()
              << "\n  " << quant::storage_report(codes, state8).to_string() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "lowbit-train: " << e.what() << "\n";
    return 1;
  }
}
