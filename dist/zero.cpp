#include "dist/zero.h"

#include <torch/torch.h>

#include "kernels/error.h"
#include "optim/lamb8bit.h"

namespace lowbit::dist {

ZeroOptimizer::ZeroOptimizer(Group& group, std::vector<torch::Tensor> params, const Factory& make,
                             int64_t block_size, int64_t min_8bit_size)
    : group_(group), params_(std::move(params)) {
  LOWBIT_CHECK(block_size > 0 && min_8bit_size >= 0, "dist: ZeroOptimizer: block_size ",
               block_size, " must be positive and min_8bit_size ", min_8bit_size,
               " not negative");
  LOWBIT_CHECK(!params_.empty(), "dist: ZeroOptimizer: no parameters");
  // The blocks of all parameters in order, each weighted by its state bytes per element (one
  // for 8-bit states, four for 32-bit ones, whose tensors are below min_8bit_size), so that
  // every rank holds about the same state memory: rank r owns the contiguous blocks whose
  // weighted start lies in [W r / N, W (r + 1) / N).
  std::vector<int64_t> first_block{0}, first_cost{0}, unit;
  for (size_t k = 0; k < params_.size(); ++k) {
    const auto& p = params_[k];
    LOWBIT_CHECK(p.is_contiguous() && p.device().is_cpu() &&
                     p.scalar_type() == params_[0].scalar_type(),
                 "dist: ZeroOptimizer: parameter ", k,
                 " must be contiguous, on the CPU and of the first parameter's dtype");
    unit.push_back(p.numel() >= min_8bit_size ? 1 : 4);
    first_block.push_back(first_block.back() + (p.numel() + block_size - 1) / block_size);
    first_cost.push_back(first_cost.back() + p.numel() * unit.back());
  }
  const int64_t total = first_block.back(), weight = first_cost.back(), ranks = group_.size();
  // The first block whose weighted start s satisfies s N >= W r.
  const auto boundary = [&](int64_t r) {
    for (size_t k = 0; k < params_.size(); ++k) {
      if (first_cost[k] * ranks >= weight * r) return first_block[k];
      if (first_cost[k + 1] * ranks > weight * r) {
        const int64_t step = block_size * unit[k] * ranks;
        const int64_t j = (weight * r - first_cost[k] * ranks + step - 1) / step;
        return std::min(first_block[k] + j, first_block[k + 1]);
      }
    }
    return total;
  };
  shards_.resize(size_t(ranks));
  for (int64_t r = 0; r < ranks; ++r) {
    const int64_t lo = boundary(r), hi = r + 1 == ranks ? total : boundary(r + 1);
    for (size_t k = 0; k < params_.size(); ++k) {
      const int64_t b0 = std::max(lo, first_block[k]), b1 = std::min(hi, first_block[k + 1]);
      if (b0 >= b1) continue;
      const int64_t begin = (b0 - first_block[k]) * block_size;
      const int64_t end = std::min((b1 - first_block[k]) * block_size, params_[k].numel());
      Shard s{k, begin, end - begin, {}};
      if (r == group_.rank()) {
        s.view = params_[k].detach().view({-1}).narrow(0, begin, end - begin);
        s.view.set_requires_grad(true);
      }
      shards_[size_t(r)].push_back(std::move(s));
    }
  }
  std::vector<torch::Tensor> mine;
  for (const Shard& s : shards_[size_t(group_.rank())]) mine.push_back(s.view);
  if (mine.empty()) return;  // more ranks than blocks
  optimizer_ = make(mine);
  LOWBIT_CHECK(optimizer_, "dist: ZeroOptimizer: the factory returned no optimizer");
  LOWBIT_CHECK(!dynamic_cast<optim::LAMB8bit*>(optimizer_.get()),
               "dist: ZeroOptimizer: LAMB8bit's trust ratio needs norms over whole tensors, "
               "which sharded states do not have yet");
  LOWBIT_CHECK(optimizer_->param_groups().size() == 1,
               "dist: ZeroOptimizer: one parameter group only");
  const optim::StateSettings& settings = optimizer_->group_settings(0);
  LOWBIT_CHECK(settings.block_size == block_size && settings.min_8bit_size == min_8bit_size,
               "dist: ZeroOptimizer: the optimizer's block_size ", settings.block_size,
               " and min_8bit_size ", settings.min_8bit_size, " must be the ones given here (",
               block_size, ", ", min_8bit_size, ")");
  LOWBIT_CHECK(settings.percentile_clipping == 100 && settings.max_unorm == 0.0,
               "dist: ZeroOptimizer: percentile_clipping and max_unorm need norms over whole "
               "tensors, which sharded states do not have yet");
  // 8-bit or not by the whole tensor's size, as without sharding.
  for (const Shard& s : shards_[size_t(group_.rank())]) {
    optim::ParamOverride o;
    if (settings.quantizes(params_[s.param].numel()))
      o.min_8bit_size = 0;
    else
      o.optim_bits = 32;
    optimizer_->override_config(s.view, o);
  }
}

int64_t ZeroOptimizer::owned_elements() const {
  int64_t n = 0;
  for (const Shard& s : shards_[size_t(group_.rank())]) n += s.size;
  return n;
}

void ZeroOptimizer::zero_grad() {
  for (auto& p : params_) p.mutable_grad() = torch::Tensor();
  for (auto& s : shards_[size_t(group_.rank())]) s.view.mutable_grad() = torch::Tensor();
}

void ZeroOptimizer::step() {
  torch::NoGradGuard no_grad;
  for (const auto& p : params_) {
    if (p.grad().defined() && !torch::isfinite(p.grad()).all().item<bool>()) {
      ++skipped_;
      return;
    }
  }
  if (optimizer_) {
    for (Shard& s : shards_[size_t(group_.rank())]) {
      const auto& g = params_[s.param].grad();
      s.view.mutable_grad() =
          g.defined() ? g.reshape({-1}).narrow(0, s.begin, s.size) : torch::Tensor();
    }
    optimizer_->step();
  }
  // Each rank's shards, concatenated, from their owner to everyone.
  const auto dtype = params_[0].scalar_type();
  for (int r = 0; r < group_.size(); ++r) {
    const auto& shards = shards_[size_t(r)];
    int64_t size = 0;
    for (const Shard& s : shards) size += s.size;
    if (size == 0) continue;
    torch::Tensor buffer;
    if (r == group_.rank()) {
      std::vector<torch::Tensor> views;
      for (const Shard& s : shards) views.push_back(s.view.detach());
      buffer = torch::cat(views);
    } else {
      buffer = torch::empty({size}, torch::TensorOptions().dtype(dtype));
    }
    group_.broadcast(buffer, r);
    if (r == group_.rank()) continue;
    int64_t offset = 0;
    for (const Shard& s : shards) {
      params_[s.param].detach().view({-1}).narrow(0, s.begin, s.size).copy_(
          buffer.narrow(0, offset, s.size));
      offset += s.size;
    }
  }
}

}  // namespace lowbit::dist
