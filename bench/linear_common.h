// What the linear-layer benchmarks share: the shapes, float32 weights that
// calls rotate over so each call streams its weight from memory, the Eigen
// float32 baseline split over the OpenMP threads, and the group names the
// ratio tables match baselines by.
#pragma once

#define EIGEN_DONT_PARALLELIZE  // threads come from the OpenMP split below
#include <unistd.h>

#include <Eigen/Core>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace lowbit::bench {

struct Shape {
  int64_t out, in;
  std::string name() const { return std::to_string(out) + "x" + std::to_string(in); }
};

// "<out>x<in>/batch:<m>/threads:<t>": one group per row of the ratio tables.
inline std::string linear_group(const Shape& s, int64_t batch, int threads) {
  return s.name() + "/batch:" + std::to_string(batch) + "/threads:" + std::to_string(threads);
}

// Calls rotate over copies of a layer holding at least three times the
// last-level cache in all (at least 96 MiB), so every call streams its weight
// from memory as in a model with many layers. (The GPU machine's 16-core
// Xeon has 300 MiB of L3: with a fixed 96 MiB its batch-1 rows read the
// cache, above memcpy's rate.)
inline double rotation_bytes() {
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return std::max(96.0 * (1 << 20), 3.0 * double(l3 > 0 ? l3 : 0));
}

inline int copies_for(double bytes) {
  return std::max(1, int(std::ceil(rotation_bytes() / bytes)));
}

// Float32 weights [out, in] (scaled like a trained layer's), enough copies to
// rotate over; made once per shape.
inline const std::vector<torch::Tensor>& float_weights(const Shape& s) {
  static std::map<std::string, std::vector<torch::Tensor>> all;
  std::vector<torch::Tensor>& w = all[s.name()];
  if (w.empty()) {
    torch::manual_seed(0);
    for (int i = copies_for(4.0 * double(s.in * s.out)); i > 0; --i)
      w.push_back(torch::randn({s.out, s.in}) / std::sqrt(double(s.in)));
  }
  return w;
}

// y = x W^T with the output features split evenly over the OpenMP threads.
inline void eigen_linear(const torch::Tensor& x, const torch::Tensor& w, torch::Tensor& y) {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Index m = x.size(0), in = x.size(1), out = w.size(0);
  Eigen::Map<const Matrix> X(x.data_ptr<float>(), m, in), W(w.data_ptr<float>(), out, in);
  Eigen::Map<Matrix> Y(y.data_ptr<float>(), m, out);
#pragma omp parallel
  {
    const Eigen::Index t = omp_get_thread_num(), n = omp_get_num_threads();
    const Eigen::Index o0 = out * t / n, o1 = out * (t + 1) / n;
    Y.middleCols(o0, o1 - o0).noalias() = X * W.middleRows(o0, o1 - o0).transpose();
  }
}

}  // namespace lowbit::bench
