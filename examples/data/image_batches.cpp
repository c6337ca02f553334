#include "examples/data/image_batches.h"

#include <utility>

#include "examples/data/splitmix.h"

namespace lowbit::data {

torch::Tensor epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  TORCH_CHECK(n >= 1 && epoch >= 0, "epoch_permutation: needs n >= 1 and epoch >= 0, got ", n,
              " and ", epoch);
  torch::Tensor order = torch::arange(n, torch::kInt64);
  int64_t* p = order.data_ptr<int64_t>();
  SplitMix64 rng = stream(seed, uint64_t(epoch));
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng.below(uint64_t(i) + 1)]);
  return order;
}

ImageBatches::ImageBatches(ImageSet set, int64_t batch_size, uint64_t seed)
    : set_(std::move(set)), batch_size_(batch_size), seed_(seed) {
  const int64_t n = set_.images.size(0);
  TORCH_CHECK(n >= 1, "ImageBatches: the image set is empty");
  TORCH_CHECK(batch_size_ >= 1, "ImageBatches: batch size must be positive, got ", batch_size_);
  per_epoch_ = (n + batch_size_ - 1) / batch_size_;
}

std::pair<torch::Tensor, torch::Tensor> ImageBatches::batch(int64_t index) {
  TORCH_CHECK(index >= 0, "ImageBatches: batch index must be non-negative, got ", index);
  const int64_t epoch = index / per_epoch_, within = index % per_epoch_;
  if (epoch != epoch_) {
    order_ = epoch_permutation(set_.images.size(0), seed_, epoch);
    epoch_ = epoch;
  }
  const torch::Tensor rows =
      order_.slice(0, within * batch_size_, std::min((within + 1) * batch_size_, order_.numel()));
  return {set_.images.index_select(0, rows), set_.labels.index_select(0, rows)};
}

}  // namespace lowbit::data
