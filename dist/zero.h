// ZeRO stage 1 for lowbit's optimizers (issue 19): every rank keeps the optimizer states of a
// balanced share of the parameters' quantization blocks and updates only those elements; each
// rank's updated elements then reach the others by broadcast. State memory per rank falls as
// 1 / ranks, and the parameters are the same bits as data-parallel training with whole states:
// the shards are cut on the global tensors' block boundaries (a block never splits), and
// whether a tensor's states are 8-bit follows its global size, so every block is quantized
// exactly as it is without sharding.
//
// This slice: one parameter group; Adam8bit, AdamW8bit, Lion8bit and RMSprop8bit without
// percentile clipping or max_unorm (which, like LAMB's trust ratio, need norms over whole
// tensors: refused until they are summed across ranks). Checkpoints are per rank.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "dist/process_group.h"
#include "optim/optimizer8bit.h"

namespace lowbit::dist {

class ZeroOptimizer {
 public:
  // Builds the rank's optimizer over its shards (1-D views into the parameters' memory).
  using Factory =
      std::function<std::unique_ptr<optim::Optimizer8bit>(std::vector<torch::Tensor> shards)>;

  // `params`: contiguous, on the CPU, the same shapes on every rank. `block_size` and
  // `min_8bit_size` must be the optimizer's (its options are checked against them).
  ZeroOptimizer(Group& group, std::vector<torch::Tensor> params, const Factory& make,
                int64_t block_size = 256, int64_t min_8bit_size = 4096);

  // After average_gradients: if any gradient element is NaN or infinite the step is skipped on
  // every rank (the gradients are the same bits everywhere, so all ranks decide alike);
  // otherwise each rank updates its shards and broadcasts them.
  void step();
  void zero_grad();

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
  Group& group_;
  std::vector<torch::Tensor> params_;
  std::vector<std::vector<Shard>> shards_;  // per rank, in parameter order
  std::unique_ptr<optim::Optimizer8bit> optimizer_;
  int64_t skipped_ = 0;
};

}  // namespace lowbit::dist
