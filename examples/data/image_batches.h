// Shuffled mini-batches over an image set: epoch e visits the examples in a
// permutation drawn from (seed, e), so micro-batch k of a run is a pure
// function of (seed, k) and a resumed run needs only its batch counter.
#pragma once

#include <cstdint>
#include <utility>

#include <torch/types.h>

#include "examples/data/idx.h"

namespace lowbit::data {

class ImageBatches {
 public:
  ImageBatches(ImageSet set, int64_t batch_size, uint64_t seed);

  // ceil(N / batch_size): the last batch of an epoch may be smaller.
  int64_t batches_per_epoch() const { return per_epoch_; }

  // Micro-batch `index` counted from the start of training (epoch
  // index / batches_per_epoch): (images, labels).
  std::pair<torch::Tensor, torch::Tensor> batch(int64_t index);

 private:
  ImageSet set_;
  int64_t batch_size_, per_epoch_;
  uint64_t seed_;
  int64_t epoch_ = -1;  // the epoch whose permutation is cached
  torch::Tensor order_;
};

// Fisher-Yates shuffle of 0..n-1 driven by SplitMix64 stream (seed, epoch).
torch::Tensor epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace lowbit::data
