// The processes of a data-parallel run as the trainer sees them (issue 19): which rank this
// process is, the collectives a step needs, and ZeRO-1 for lowbit's 8-bit optimizers. Built on
// lowbit_dist's Gloo process group where this build has it; a build without Gloo runs one
// process and refuses to start as a rank of several.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

namespace lowbit::train {

// ZeRO-1 over the ranks: each rank updates the elements whose optimizer states it owns and
// the others receive them (dist::ZeroOptimizer).
class ShardedOptimizer {
 public:
  virtual ~ShardedOptimizer() = default;
  virtual void set_lr(double lr) = 0;
  // After the gradients are averaged: the update, the same parameters on every rank.
  virtual void step() = 0;
  virtual int64_t state_bytes() const = 0;  // this rank's
  virtual int64_t skipped_steps() const = 0;
  // Collective: gathers the one logical state dict, in the single-process optimizer's format,
  // into rank 0's `archive` (the other ranks' stay empty).
  virtual void save(torch::serialize::OutputArchive& archive) const = 0;
  // Collective: every rank passes the same state dict (saved on any number of ranks, or by the
  // single-process optimizer) and keeps its own shards; throws on every rank if any fails.
  virtual void load(torch::serialize::InputArchive& archive) = 0;
};

class Ranks {
 public:
  // The rank's optimizer over 1-D views of its share of the parameters.
  using Factory =
      std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>)>;

  // A process of a multi-process run when WORLD_SIZE is set above 1 (with RANK, MASTER_ADDR,
  // MASTER_PORT, as torchrun and `lowbit-train --nproc` set them): joins the others, waiting
  // at most `timeout` for them and for each collective after. nullptr for a run of one
  // process, which opens no store or port. With `cuda`, the rank trains on GPU
  // LOCAL_RANK % (GPUs visible), and NCCL carries its CUDA tensors when this build has NCCL and
  // every local rank has a GPU of its own; otherwise Gloo does, through host memory.
  static std::unique_ptr<Ranks> from_environment(std::chrono::seconds timeout, bool cuda);

  ~Ranks();
  Ranks(const Ranks&) = delete;
  Ranks& operator=(const Ranks&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // This rank's CUDA device (from_environment with `cuda`), else -1.
  int cuda_device() const { return cuda_device_; }
  // What carries the collectives, for the run's header.
  const std::string& collectives() const { return collectives_; }

  // Throws, on every rank alike, when some rank's `fingerprint` of `what` differs from rank
  // 0's; the message names those ranks and ends with `advice`.
  void check_same(const std::string& what, uint64_t fingerprint, const std::string& advice);
  // Each value becomes its sum over the ranks.
  void sum(std::vector<double>& values);
  void broadcast_parameters(const std::vector<torch::Tensor>& params);
  // Gradient averaging overlapped with backward (dist::OverlappedAverage) over `params`, fixed
  // for the run: arm_gradients() before the backward of a step's last micro-batch,
  // average_gradients() after it.
  void sync_gradients_of(const std::vector<torch::Tensor>& params);
  void arm_gradients();
  void average_gradients();
  // `make` must return one of lowbit's 8-bit optimizers whose block_size and min_8bit_size are
  // the ones given.
  std::unique_ptr<ShardedOptimizer> shard_optimizer(const std::vector<torch::Tensor>& params,
                                                    const Factory& make, int64_t block_size,
                                                    int64_t min_8bit_size);

 private:
  Ranks() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
  int cuda_device_ = -1;
  std::string collectives_;
};

// FNV-1a over the bytes of `text`: a fingerprint for Ranks::check_same.
uint64_t fingerprint(const std::string& text);

}  // namespace lowbit::train
