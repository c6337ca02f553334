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

struct OverlappedAverage::Bucket {
  torch::Tensor flat;          // the gradients of `params`, one after another
  std::vector<size_t> params;  // indices into params_
  size_t missing = 0;          // gradients not copied in yet this step
  Group::Pending pending;
};

OverlappedAverage::OverlappedAverage(Group& group, std::vector<torch::Tensor> params,
                                     size_t bucket_bytes)
    : group_(group) {
  LOWBIT_CHECK(bucket_bytes > 0, "dist: bucket_bytes must be positive");
  for (auto& p : params)
    if (p.requires_grad()) params_.push_back(std::move(p));
  check_same_layout(group_, params_);
  if (!group_.connected()) return;
  place_.resize(params_.size());
  filled_.assign(params_.size(), false);
  // Consecutive parameters, last first, of one dtype and device, up to bucket_bytes (a larger
  // one goes alone).
  std::vector<int64_t> elements;
  size_t bytes = 0;
  for (size_t i = params_.size(); i-- > 0;) {
    const torch::Tensor& p = params_[i];
    const size_t size = p.numel() * p.element_size();
    const bool fits = !buckets_.empty() &&
                      p.scalar_type() == params_[buckets_.back()->params[0]].scalar_type() &&
                      p.device() == params_[buckets_.back()->params[0]].device() &&
                      bytes + size <= bucket_bytes;
    if (!fits) {
      buckets_.push_back(std::make_unique<Bucket>());
      elements.push_back(0);
      bytes = 0;
    }
    place_[i] = {buckets_.size() - 1, elements.back()};
    buckets_.back()->params.push_back(i);
    elements.back() += p.numel();
    bytes += size;
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const torch::Tensor& first = params_[buckets_[b]->params[0]];
    buckets_[b]->flat = torch::empty({elements[b]}, first.options().requires_grad(false));
  }
  for (size_t i = 0; i < params_.size(); ++i)
    hooks_.push_back(
        params_[i].register_hook([this, i](const torch::Tensor& grad) { on_gradient(i, grad); }));
}

OverlappedAverage::~OverlappedAverage() {
  for (size_t i = 0; i < hooks_.size(); ++i) params_[i].remove_hook(hooks_[i]);
  for (auto& b : buckets_) {
    try {
      b->pending.wait();
    } catch (const std::exception&) {
      // A step left unfinished by an error that is already on its way up.
    }
  }
}

void OverlappedAverage::arm() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = true;
  filled_.assign(filled_.size(), false);
  for (auto& b : buckets_) b->missing = b->params.size();
  next_ = 0;
}

// The gradient backward produced for parameter i, before autograd adds it to .grad: the bucket
// takes what .grad will then hold.
void OverlappedAverage::on_gradient(size_t i, const torch::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_ || filled_[i]) return;
  torch::NoGradGuard no_grad;
  auto dst = slot(i);
  const torch::Tensor& sum = params_[i].grad();
  if (sum.defined())
    torch::add_out(dst, sum.reshape({-1}), grad.reshape({-1}));
  else
    dst.copy_(grad.reshape({-1}));
  filled_[i] = true;
  if (--buckets_[place_[i].first]->missing == 0) start_ready();
}

torch::Tensor OverlappedAverage::slot(size_t i) const {
  const auto [b, offset] = place_[i];
  return buckets_[b]->flat.narrow(0, offset, params_[i].numel());
}

void OverlappedAverage::start_ready() {
  while (next_ < buckets_.size() && buckets_[next_]->missing == 0) {
    Bucket& bucket = *buckets_[next_++];
    bucket.pending = group_.all_reduce_sum_async({bucket.flat});
  }
}

void OverlappedAverage::finish() {
  if (!group_.connected()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    LOWBIT_CHECK(armed_, "dist: OverlappedAverage::finish() without arm() before the backward");
    armed_ = false;
    torch::NoGradGuard no_grad;
    // What the armed backward did not produce: earlier micro-batches' sum, or zeros.
    for (size_t i = 0; i < params_.size(); ++i) {
      if (filled_[i]) continue;
      auto dst = slot(i);
      const torch::Tensor& sum = params_[i].grad();
      if (sum.defined())
        dst.copy_(sum.reshape({-1}));
      else
        dst.zero_();
      filled_[i] = true;
      --buckets_[place_[i].first]->missing;
    }
    start_ready();
  }
  for (auto& b : buckets_) b->pending.wait();
  torch::NoGradGuard no_grad;
  for (auto& b : buckets_) b->flat.div_(double(group_.size()));
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i];
    const auto mean = slot(i).view_as(p);
    if (p.grad().defined())
      p.mutable_grad().copy_(mean);
    else
      p.mutable_grad() = mean.clone();
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
