#include "examples/train/grad_clip.h"

#include <cmath>

namespace lowbit::train {

double clip_gradients(const std::vector<torch::Tensor>& params, double max_norm) {
  double sum_sq = 0.0;
  for (const torch::Tensor& p : params) {
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    const torch::Tensor wide = g.scalar_type() == torch::kFloat64 ? g : g.to(torch::kFloat32);
    const double n = wide.norm().item<double>();
    sum_sq += n * n;
  }
  const double norm = std::sqrt(sum_sq);
  const double scale = max_norm / (norm + 1e-6);
  if (max_norm > 0.0 && scale < 1.0) {
    for (const torch::Tensor& p : params) {
      if (p.grad().defined()) p.grad().mul_(scale);
    }
  }
  return norm;
}

}  // namespace lowbit::train
