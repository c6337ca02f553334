#include "examples/train/grad_clip.h"

#include <cmath>

namespace lowbit::train {

double clip_gradients(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> norms;
  for (const torch::Tensor& p : params) {
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    const torch::Tensor wide = g.scalar_type() == torch::kFloat64 ? g : g.to(torch::kFloat32);
    norms.push_back(wide.norm().to(torch::kFloat64));  // exact: float -> double
  }
  if (norms.empty()) return 0.0;
  // One read-back for all tensors: on a GPU each one waits for the device.
  const torch::Tensor host = torch::stack(norms).cpu();
  const double* n = host.data_ptr<double>();
  double sum_sq = 0.0;
  for (int64_t i = 0; i < host.numel(); ++i) sum_sq += n[i] * n[i];
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
