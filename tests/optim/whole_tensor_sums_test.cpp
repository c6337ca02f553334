// WholeTensorSums (optim/optimizer8bit.h), in one process: an optimizer over the two halves of a
// tensor, whose sums a WholeTensorSums adds back up, steps as an optimizer over the tensor does:
// percentile clipping, LAMB's trust ratio and max_unorm decide from whole-tensor norms. This is
// the hook dist::ZeroOptimizer fills with an all-reduce.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <vector>

#include "optim/optim.h"

namespace {

using lowbit::optim::Optimizer8bit;

// Every part is a half of one tensor: each part's sum becomes the sum over both.
class AddTheHalves : public lowbit::optim::WholeTensorSums {
 public:
  int calls = 0;
  void gradient(const std::vector<torch::Tensor>& parts, std::vector<double>& grad_sq) override {
    ++calls;
    add(parts, grad_sq);
  }
  void update(const std::vector<torch::Tensor>& parts, std::vector<double>& update_sq,
              std::vector<double>& param_sq) override {
    ++calls;
    add(parts, update_sq);
    add(parts, param_sq);
  }

 private:
  static void add(const std::vector<torch::Tensor>& parts, std::vector<double>& sums) {
    ASSERT_EQ(parts.size(), 2u);
    const double total = sums[0] + sums[1];
    sums = {total, total};
  }
};

using Factory = std::function<std::unique_ptr<Optimizer8bit>(std::vector<torch::Tensor>)>;

// The tensor after `steps` steps of an optimizer over its halves (with `sums`, or without).
torch::Tensor trained_in_halves(const Factory& make, int steps,
                                std::shared_ptr<AddTheHalves> sums) {
  torch::manual_seed(3);
  const torch::Tensor tensor = torch::randn({64, 128}) * 0.1;  // 32 blocks of 256
  const torch::Tensor flat = tensor.view({-1});
  std::vector<torch::Tensor> halves{flat.narrow(0, 0, 4096), flat.narrow(0, 4096, 4096)};
  for (auto& h : halves) h.set_requires_grad(true);
  auto opt = make(halves);
  if (sums) opt->set_whole_tensor_sums(sums);
  torch::Generator data = at::detail::createCPUGenerator(11);
  for (int step = 0; step < steps; ++step) {
    // Norms that change from step to step, so that the 5th percentile clips.
    const torch::Tensor grad = torch::randn({8192}, data) * (1.0 + step % 3);
    halves[0].mutable_grad() = grad.narrow(0, 0, 4096);
    halves[1].mutable_grad() = grad.narrow(0, 4096, 4096);
    opt->step();
  }
  return tensor;
}

torch::Tensor trained_whole(const Factory& make, int steps) {
  torch::manual_seed(3);
  torch::Tensor tensor = (torch::randn({64, 128}) * 0.1).set_requires_grad(true);
  auto opt = make({tensor});
  torch::Generator data = at::detail::createCPUGenerator(11);
  for (int step = 0; step < steps; ++step) {
    tensor.mutable_grad() = (torch::randn({8192}, data) * (1.0 + step % 3)).view({64, 128});
    opt->step();
  }
  return tensor.detach();
}

void halves_step_as_the_whole(const Factory& make) {
  const auto sums = std::make_shared<AddTheHalves>();
  const torch::Tensor whole = trained_whole(make, 10);
  // The halves' sums are added in another order than the whole tensor's blocks (~1e-16
  // relative), which the float arguments of a step round away but for a ~1e-9 chance per
  // step: with these fixed numbers, the same bits.
  EXPECT_TRUE(torch::equal(trained_in_halves(make, 10, sums), whole));
  EXPECT_EQ(sums->calls, 20);  // both calls, every step
  // Without the sums each half decides from its own norms, and ends elsewhere.
  EXPECT_FALSE(torch::equal(trained_in_halves(make, 10, nullptr), whole));
}

TEST(WholeTensorSums, HalvesOfATensorStepAsTheTensorWithLambAndClipping) {
  halves_step_as_the_whole([](std::vector<torch::Tensor> params) {
    return std::make_unique<lowbit::optim::LAMB8bit>(
        std::move(params), lowbit::optim::LAMB8bitOptions(1e-2).percentile_clipping(5));
  });
}

TEST(WholeTensorSums, HalvesOfATensorStepAsTheTensorWithAdamWClippingAndMaxUnorm) {
  halves_step_as_the_whole([](std::vector<torch::Tensor> params) {
    return std::make_unique<lowbit::optim::AdamW8bit>(
        std::move(params),
        lowbit::optim::AdamW8bitOptions(1e-2).percentile_clipping(5).max_unorm(0.5));
  });
}

}  // namespace
