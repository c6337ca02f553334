// ZeRO stage 1 for lowbit's optimizers (issue 19): every rank keeps the optimizer states of a
// balanced share of the parameters' quantization blocks and updates only those elements; each
// rank's updated elements then reach the others by broadcast. State memory per rank falls as
// 1 / ranks, and the parameters are the same bits as data-parallel training with whole states:
// the shards are cut on the global tensors' block boundaries (a block never splits), and
// whether a tensor's states are 8-bit follows its global size, so every block is quantized
// exactly as it is without sharding.
//
// Every lowbit optimizer (one parameter group). Percentile clipping, LAMB's trust ratio and
// max_unorm decide from norms over whole tensors: each rank sums its shards, and one all-reduce
// per step adds the ranks' sums, so every shard of a tensor takes the same decision (and keeps
// the same gradient-norm history) as the whole tensor would. A checkpoint is one logical state
// dict in the single-process optimizer's format, written by rank 0, and loads on any number of
// ranks.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "dist/process_group.h"
#include "optim/optimizer8bit.h"

namespace lowbit::dist {

class ZeroOptimizer {
 public:
  // Builds an optimizer over the given tensors: the rank's shards (1-D views into the
  // parameters' memory) and, for checkpoints, the whole parameters.
  using Factory =
      std::function<std::unique_ptr<optim::Optimizer8bit>(std::vector<torch::Tensor> tensors)>;

  // Collective. `params`: contiguous, all on the CPU or all on this rank's CUDA device (its
  // states live there too), the same shapes on every rank. `block_size` and `min_8bit_size`
  // must be the optimizer's (its options are checked against them). Throws on every rank when
  // a rank's optimizer cannot be built or the ranks' optimizers differ in what their step sums
  // across ranks.
  ZeroOptimizer(Group& group, std::vector<torch::Tensor> params, const Factory& make,
                int64_t block_size = 256, int64_t min_8bit_size = 4096);
  ~ZeroOptimizer();
  ZeroOptimizer(const ZeroOptimizer&) = delete;
  ZeroOptimizer& operator=(const ZeroOptimizer&) = delete;

  // Collective, after average_gradients: if any gradient element is NaN or infinite the step is
  // skipped on every rank (the gradients are the same bits everywhere, so all ranks decide
  // alike); otherwise each rank updates its shards and broadcasts them.
  void step();
  void zero_grad();

  // Checkpoints: ONE state dict in the format the single-process optimizer writes over `params`
  // (its load() and torch::load read it), whatever the number of ranks.
  // Collective: gathers the shards' states on rank 0, whose `archive` receives the state dict;
  // the other ranks' archives stay empty.
  void save(torch::serialize::OutputArchive& archive) const;
  // Collective: rank 0 writes the state dict to `path` atomically (a failed save leaves the
  // previous file as it was); every rank throws if the save fails on any.
  void save(const std::string& path) const;
  // Collective: every rank passes the same state dict (from save() on any number of ranks, or
  // from a single-process optimizer over the same parameters) and takes its own shards of it.
  // Each rank holds the whole state dict while loading. One that does not fit the parameters
  // or the optimizer throws on every rank, naming what differs. As with the single-process
  // load(), a parameter without a state in the state dict keeps its own.
  void load(torch::serialize::InputArchive& archive);
  // Collective: load() from `path`, which every rank must be able to read.
  void load(const std::string& path);

  // This rank's optimizer state bytes, and the elements it owns.
  int64_t state_bytes() const { return optimizer_ ? optimizer_->state_bytes() : 0; }
  int64_t owned_elements() const;
  int64_t skipped_steps() const { return skipped_; }
  optim::Optimizer8bit& local() { return *optimizer_; }

 private:
  struct Shard {
    size_t param;          // index into params_
    int64_t begin, size;   // elements of the flattened parameter
    torch::Tensor view;    // params_[param] flattened, narrowed; its grad is set per step
  };
  class Sums;
  // Replaces each column's sums over this rank's `parts` by their sums over every rank's parts
  // of the same parameters (one all-reduce when `needed`; with `needed` false, no part may
  // ask for sums).
  void sum_over_ranks(bool needed, const char* what, const std::vector<torch::Tensor>& parts,
                      const std::vector<std::vector<double>*>& columns);
  // Each rank's shard states, on rank 0 (empty elsewhere), in shards_ order.
  std::vector<std::vector<std::unique_ptr<optim::QuantizedParamState>>> gather_states(
      int64_t& skipped_blocks) const;
  // load() on this rank: checks the state dict against the parameters and the optimizer and
  // installs this rank's shards of it.
  void install(torch::serialize::InputArchive& archive);

  Group& group_;
  std::vector<torch::Tensor> params_;
  Factory make_;
  int64_t block_size_;
  std::vector<std::vector<Shard>> shards_;  // per rank, in parameter order
  // The parameter each of this rank's shard views belongs to.
  std::unordered_map<const c10::TensorImpl*, size_t> param_of_;
  std::unique_ptr<optim::Optimizer8bit> optimizer_;
  // Whether a step sums gradient norms (percentile clipping) and update and parameter norms
  // (LAMB, max_unorm) across ranks: the same on every rank.
  bool gradient_sums_ = false, update_sums_ = false;
  std::shared_ptr<Sums> sums_;
  int64_t skipped_ = 0;
};

}  // namespace lowbit::dist
