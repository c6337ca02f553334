// Data-parallel training (issue 19): after each rank's backward over its shard of the batch,
// average_gradients makes every rank's gradients the mean over the ranks, so that an optimizer
// step on each rank gives the parameters one process would get from the whole batch (the loss
// being a mean over equal shards), up to the all-reduce's float rounding.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "dist/process_group.h"

namespace lowbit::dist {

// Averages the gradients of `params` (those that require grad) over the group, in place. A
// missing gradient takes part as zeros (and is then defined), so every rank sends the same
// layout. Gradients are packed into buckets of at most `bucket_bytes` (one all-reduce each, by
// dtype and device, in parameter order). Every rank must pass the same parameter shapes in the
// same order: a mismatch throws, naming the parameter.
void average_gradients(Group& group, const std::vector<torch::Tensor>& params,
                       size_t bucket_bytes = size_t(25) << 20);

// average_gradients overlapped with backward, as torch's DistributedDataParallel does it: hooks
// on the parameters copy each gradient into its bucket as backward produces it, and a bucket
// whose gradients are all there starts its all-reduce while backward computes the rest. A step:
// arm() before the backward of its last micro-batch (earlier micro-batches only accumulate),
// finish() after it. finish() leaves every trained parameter's gradient as average_gradients
// would: the mean over the ranks, zeros taking part for a gradient a rank did not produce.
// Buckets follow the parameters in reverse order (backward meets the last layers first) and
// start in that order on every rank.
class OverlappedAverage {
 public:
  // Collective (checks that the ranks have the same parameters, as average_gradients does).
  OverlappedAverage(Group& group, std::vector<torch::Tensor> params,
                    size_t bucket_bytes = size_t(25) << 20);
  ~OverlappedAverage();  // removes the hooks
  OverlappedAverage(const OverlappedAverage&) = delete;
  OverlappedAverage& operator=(const OverlappedAverage&) = delete;

  void arm();
  // Collective: starts the buckets not started yet, waits for all and writes the averages.
  void finish();

 private:
  struct Bucket;
  void on_gradient(size_t param, const torch::Tensor& grad);
  torch::Tensor slot(size_t param) const;  // the parameter's elements of its bucket
  void start_ready();  // under mutex_

  Group& group_;
  std::vector<torch::Tensor> params_;  // those that require grad
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<std::pair<size_t, int64_t>> place_;  // per parameter: bucket, offset
  std::vector<bool> filled_;                     // per parameter, this step
  std::vector<unsigned> hooks_;
  std::mutex mutex_;
  bool armed_ = false;
  size_t next_ = 0;  // the first bucket not started
};

// Copies rank `root`'s parameter values to every rank (for a start from one initialisation).
void broadcast_parameters(Group& group, const std::vector<torch::Tensor>& params, int root = 0);

}  // namespace lowbit::dist
