// Shuffled image batches: every epoch visits each example exactly once, in an
// order that depends on the seed and the epoch only, so batch k of a run is
// the same whether or not the run was resumed in between.
#include <cstdint>
#include <set>
#include <vector>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/data/image_batches.h"
#include "examples/data/splitmix.h"

namespace lowbit::data {
namespace {

// 10 "images" whose single pixel and label both hold the example's index.
ImageSet numbered(int64_t n) {
  const torch::Tensor ids = torch::arange(n, torch::kInt64);
  return {ids.to(torch::kFloat32).view({n, 1, 1, 1}), ids};
}

// Every data order rests on SplitMix64: its first outputs for seed 1234567
// are the published ones of the reference implementation (Vigna's
// splitmix64.c, the generator of the paper).
TEST(SplitMix64, MatchesTheReferenceOutputs) {
  SplitMix64 g(1234567);
  for (uint64_t expected : {6457827717110365317ull, 3203168211198807973ull, 9817491932198370423ull,
                            4593380528125082431ull, 16408922859458223821ull})
    EXPECT_EQ(g.next(), expected);
}

TEST(ImageBatches, EachEpochVisitsEveryExampleOnce) {
  ImageBatches batches(numbered(10), 4, 3);
  ASSERT_EQ(batches.batches_per_epoch(), 3);  // 4 + 4 + 2
  std::vector<std::vector<int64_t>> epochs(2);
  for (int64_t k = 0; k < 6; ++k) {
    const auto [images, labels] = batches.batch(k);
    EXPECT_EQ(labels.numel(), k % 3 == 2 ? 2 : 4);
    EXPECT_TRUE(images.flatten().to(torch::kInt64).equal(labels));
    for (int64_t i = 0; i < labels.numel(); ++i)
      epochs[size_t(k / 3)].push_back(labels[i].item<int64_t>());
  }
  for (const auto& order : epochs) {
    EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), 10u);
  }
  EXPECT_NE(epochs[0], epochs[1]);  // reshuffled (10! orders: a repeat is ~3e-7 likely)
}

TEST(ImageBatches, BatchesArePureFunctionsOfSeedAndIndex) {
  ImageBatches a(numbered(10), 4, 3), b(numbered(10), 4, 3), other(numbered(10), 4, 4);
  // b jumps straight to batch 4, as a resumed run does.
  EXPECT_TRUE(b.batch(4).second.equal(a.batch(4).second));
  EXPECT_TRUE(b.batch(0).second.equal(a.batch(0).second));
  EXPECT_FALSE(other.batch(0).second.equal(a.batch(0).second));
  EXPECT_TRUE(epoch_permutation(10, 3, 1).equal(epoch_permutation(10, 3, 1)));
  EXPECT_THROW(a.batch(-1), c10::Error);
  EXPECT_THROW(ImageBatches(numbered(10), 0, 3), c10::Error);
}

}  // namespace
}  // namespace lowbit::data
