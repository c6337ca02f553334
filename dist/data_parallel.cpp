#include "dist/data_parallel.h"

#include <torch/torch.h>

#include "kernels/error.h"

namespace lowbit::dist {
namespace {

// Refuses, on every rank, parameter lists that differ between ranks (count, shapes or dtypes):
// each rank all-reduces a fingerprint F (small integers: three hashes modulo primes below 2^20)
// and F^2. Every rank finds sum F = N F and sum F^2 = N F^2 exactly when the variance over the
// ranks is zero, that is when all fingerprints agree, so either all ranks go on or all throw.
void check_same_layout(Group& group, const std::vector<torch::Tensor>& params) {
  constexpr int64_t kPrimes[3] = {1048573, 1048571, 1048559};
  int64_t f[3] = {int64_t(params.size()) % kPrimes[0], 0, 0};
  int64_t elements = 0;
  for (size_t k = 0; k < params.size(); ++k) {
    elements += params[k].numel();
    for (int h = 1; h < 3; ++h) {
      int64_t v = (f[h] * 31 + int64_t(params[k].scalar_type()) + 1) % kPrimes[h];
      for (const int64_t d : params[k].sizes()) v = (v * 131 + d % kPrimes[h]) % kPrimes[h];
      f[h] = (v * 7 + int64_t(params[k].dim())) % kPrimes[h];
    }
  }
  std::vector<torch::Tensor> sums{torch::tensor(
      {f[0], f[1], f[2], f[0] * f[0], f[1] * f[1], f[2] * f[2]}, torch::kInt64)};
  const auto mine = sums[0].clone();
  group.all_reduce_sum(sums);
  const bool same = torch::equal(sums[0], mine * int64_t(group.size()));
  LOWBIT_CHECK(same, "dist: the ranks' models differ (parameter count, shapes or dtypes); rank ",
               group.rank(), " has ", params.size(), " parameters with ", elements,
               " elements: every rank must build the same model");
}

}  // namespace

void average_gradients(Group& group, const std::vector<torch::Tensor>& params,
                       size_t bucket_bytes) {
  LOWBIT_CHECK(bucket_bytes > 0, "dist: bucket_bytes must be positive");
  std::vector<torch::Tensor> trained;
  for (const auto& p : params)
    if (p.requires_grad()) trained.push_back(p);
  check_same_layout(group, trained);
  if (!group.connected()) return;
  torch::NoGradGuard no_grad;
  for (auto& p : trained)
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);

  // Buckets: consecutive gradients of one dtype and device, up to bucket_bytes (a larger
  // gradient goes alone).
  size_t i = 0;
  while (i < trained.size()) {
    const auto dtype = trained[i].grad().scalar_type();
    const auto device = trained[i].grad().device();
    size_t j = i, bytes = 0;
    while (j < trained.size() && trained[j].grad().scalar_type() == dtype &&
           trained[j].grad().device() == device &&
           (j == i || bytes + trained[j].grad().nbytes() <= bucket_bytes)) {
      bytes += trained[j].grad().nbytes();
      ++j;
    }
    std::vector<torch::Tensor> pieces;
    for (size_t k = i; k < j; ++k) pieces.push_back(trained[k].grad().reshape({-1}));
    std::vector<torch::Tensor> flat{torch::cat(pieces)};
    group.all_reduce_sum(flat);
    flat[0].div_(double(group.size()));
    int64_t offset = 0;
    for (size_t k = i; k < j; ++k) {
      auto g = trained[k].grad();
      g.copy_(flat[0].narrow(0, offset, g.numel()).view_as(g));
      offset += g.numel();
    }
    i = j;
  }
}

void broadcast_parameters(Group& group, const std::vector<torch::Tensor>& params, int root) {
  check_same_layout(group, params);
  torch::NoGradGuard no_grad;
  for (const auto& p : params) {
    // A contiguous parameter receives in place (detach() shares its memory); only another
    // layout goes through a contiguous copy and back.
    auto data = p.detach().contiguous();
    group.broadcast(data, root);
    if (!p.is_contiguous()) p.detach().copy_(data);
  }
}

}  // namespace lowbit::dist
