// Gradient clipping against libtorch's clip_grad_norm_ on float32 gradients,
// and on float16 gradients (which clip_grad_norm_ cannot handle on the CPU)
// against the same gradients in float32.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/train/grad_clip.h"

namespace lowbit::train {
namespace {

std::vector<torch::Tensor> params_with_grads(torch::ScalarType dtype, double scale) {
  torch::manual_seed(0);
  std::vector<torch::Tensor> params;
  for (int64_t n : {7, 300, 1}) {
    torch::Tensor p = torch::zeros({n}, dtype);
    p.mutable_grad() = (torch::randn({n}) * scale).to(dtype);
    params.push_back(p);
  }
  params.push_back(torch::zeros({3}, dtype));  // no gradient: skipped
  return params;
}

TEST(ClipGradients, MatchesTorchOnFloat32) {
  for (double max_norm : {0.5, 1e6}) {
    auto mine = params_with_grads(torch::kFloat32, 1.0);
    auto reference = params_with_grads(torch::kFloat32, 1.0);
    std::vector<torch::Tensor> with_grads(reference.begin(), reference.end() - 1);
    const double expected = torch::nn::utils::clip_grad_norm_(with_grads, max_norm);
    // Norms summed in double from per-tensor float norms vs torch's float
    // norm of norms: equal to float rounding (~1e-7 relative).
    EXPECT_NEAR(clip_gradients(mine, max_norm), expected, 1e-6 * expected);
    for (size_t i = 0; i + 1 < mine.size(); ++i) {
      EXPECT_TRUE(torch::allclose(mine[i].grad(), reference[i].grad(), 1e-6, 0)) << i;
    }
  }
}

TEST(ClipGradients, ClipsFloat16LikeFloat32AndZeroTurnsItOff) {
  auto half = params_with_grads(torch::kFloat16, 1.0);
  auto full = params_with_grads(torch::kFloat32, 1.0);
  for (size_t i = 0; i + 1 < full.size(); ++i)
    full[i].mutable_grad() = half[i].grad().to(torch::kFloat32);
  const double norm = clip_gradients(half, 1.0);
  EXPECT_NEAR(norm, clip_gradients(full, 1.0), 1e-6 * norm);
  // float16 keeps ~3 decimal digits: the clipped values agree to 1e-3 relative.
  for (size_t i = 0; i + 1 < half.size(); ++i) {
    EXPECT_TRUE(torch::allclose(half[i].grad().to(torch::kFloat32), full[i].grad(), 1e-3, 1e-4))
        << i;
  }
  auto untouched = params_with_grads(torch::kFloat32, 1.0);
  const torch::Tensor before = untouched[1].grad().clone();
  EXPECT_GT(clip_gradients(untouched, 0.0), 1.0);
  EXPECT_TRUE(untouched[1].grad().equal(before));
}

}  // namespace
}  // namespace lowbit::train
