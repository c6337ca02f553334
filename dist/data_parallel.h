// Data-parallel training (issue 19): after each rank's backward over its shard of the batch,
// average_gradients makes every rank's gradients the mean over the ranks, so that an optimizer
// step on each rank gives the parameters one process would get from the whole batch (the loss
// being a mean over equal shards), up to the all-reduce's float rounding.
#pragma once

#include <cstddef>
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

// Copies rank `root`'s parameter values to every rank (for a start from one initialisation).
void broadcast_parameters(Group& group, const std::vector<torch::Tensor>& params, int root = 0);

}  // namespace lowbit::dist
