// Checkpoints: a restored model and optimizer continue exactly like the
// originals, loading is strict and leaves the model untouched on mismatch,
// corrupt files are refused by name, a failed save keeps the previous file,
// and listing/pruning see only complete checkpoints.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/models/mlp.h"
#include "examples/train/checkpoint.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::train {
namespace {

namespace fs = std::filesystem;
using lowbit::testing::ScratchDir;

// A small model and its Adam optimizer, stepped on seeded random batches.
struct Trained {
  models::MlpClassifier model;
  torch::optim::Adam adam;
  explicit Trained(uint64_t seed, int64_t hidden = 8)
      : model(seeded(seed, hidden)), adam(model->parameters(), torch::optim::AdamOptions(1e-2)) {}
  static models::MlpClassifier seeded(uint64_t seed, int64_t hidden) {
    torch::manual_seed(seed);
    return models::MlpClassifier(4, std::vector<int64_t>{hidden}, 3, 0.0);
  }
  void step(int64_t i) {
    torch::manual_seed(100 + uint64_t(i));
    const torch::Tensor x = torch::randn({16, 4});
    const torch::Tensor y = torch::randint(3, {16}, torch::kInt64);
    adam.zero_grad();
    torch::cross_entropy_loss(model->forward(x), y).backward();
    adam.step();
  }
};

void expect_bitwise_equal(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) EXPECT_TRUE(p.value().equal(pb[p.key()])) << p.key();
}

TEST(Checkpoint, RestoredRunContinuesBitIdentically) {
  ScratchDir dir;
  Trained original(1);
  for (int64_t i = 0; i < 3; ++i) original.step(i);
  TrainerState state{3, 7, torch::arange(5, torch::kUInt8), "model:\n  name: mlp\n",
                     torch::arange(3, torch::kUInt8)};
  const std::string path = checkpoint_path(dir.path(), 3);
  save_checkpoint(path, *original.model, original.adam, state);

  Trained resumed(2);  // other weights, no optimizer state yet
  Checkpoint checkpoint(path);
  EXPECT_EQ(checkpoint.state().step, 3);
  EXPECT_EQ(checkpoint.state().micro_batch, 7);
  EXPECT_TRUE(checkpoint.state().rng_state.equal(state.rng_state));
  EXPECT_EQ(checkpoint.state().recipe_yaml, state.recipe_yaml);
  EXPECT_TRUE(checkpoint.state().cuda_rng_state.equal(state.cuda_rng_state));
  checkpoint.restore(*resumed.model, resumed.adam);
  expect_bitwise_equal(*original.model, *resumed.model);
  // Adam's moments and step counts came back too: the next steps agree bit for bit.
  for (int64_t i = 3; i < 6; ++i) {
    original.step(i);
    resumed.step(i);
  }
  expect_bitwise_equal(*original.model, *resumed.model);
}

TEST(Checkpoint, LoadingIsStrictAndLeavesTheModelUntouchedOnMismatch) {
  ScratchDir dir;
  Trained small(1, 8);
  save_model(dir.file("model.pt"), *small.model);
  Trained other(2, 8);
  load_model(dir.file("model.pt"), *other.model);
  expect_bitwise_equal(*small.model, *other.model);

  Trained wide(3, 16);
  const torch::Tensor before = wide.model->named_parameters()["head.bias"].clone();
  try {
    load_model(dir.file("model.pt"), *wide.model);
    ADD_FAILURE() << "a checkpoint of another shape must be refused";
  } catch (const c10::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("tensor 'fc0.bias' is Float [8]; the model's is Float [16]"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find(dir.file("model.pt")), std::string::npos) << m;
  }
  EXPECT_TRUE(wide.model->named_parameters()["head.bias"].equal(before));

  // A model with an extra layer lacks nothing but the file lacks its tensors;
  // one with fewer layers meets tensors it does not have.
  models::MlpClassifier deeper(4, std::vector<int64_t>{8, 8}, 3, 0.0);
  EXPECT_THROW(load_model(dir.file("model.pt"), *deeper), c10::Error);
  save_model(dir.file("deep.pt"), *deeper);
  try {
    load_model(dir.file("deep.pt"), *other.model);
    ADD_FAILURE() << "tensors the model lacks must be refused";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not have"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, CorruptFilesAreRefusedByName) {
  ScratchDir dir;
  Trained s(1);
  s.step(0);
  const std::string path = checkpoint_path(dir.path(), 1);
  save_checkpoint(path, *s.model, s.adam, {1, 1, torch::zeros({1}, torch::kUInt8), "", {}});
  fs::resize_file(path, fs::file_size(path) / 2);  // as if cut short
  dir.write("garbage.ckpt", "not a checkpoint at all");
  for (const std::string& bad : {path, dir.file("garbage.ckpt"), dir.file("missing.ckpt")}) {
    try {
      Checkpoint c(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  save_model(dir.file("weights.pt"), *s.model);
  try {
    Checkpoint c(dir.file("weights.pt"));
    ADD_FAILURE() << "a model file is not a checkpoint";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model file, not a checkpoint"), std::string::npos);
  }
}

TEST(Checkpoint, FailedSaveKeepsThePreviousFile) {
  ScratchDir dir;
  Trained s(1);
  const std::string path = checkpoint_path(dir.path(), 5);
  save_checkpoint(path, *s.model, s.adam, {5, 5, torch::zeros({1}, torch::kUInt8), "first", {}});
  // The writer's temp file name is taken by a directory: the save must fail
  // before touching the checkpoint already there.
  fs::create_directory(path + ".tmp." + std::to_string(::getpid()));
  EXPECT_THROW(save_checkpoint(path, *s.model, s.adam,
                               {5, 5, torch::zeros({1}, torch::kUInt8), "second", {}}),
               c10::Error);
  EXPECT_EQ(Checkpoint(path).state().recipe_yaml, "first");
  // A CPU run writes no CUDA generator state.
  EXPECT_FALSE(Checkpoint(path).state().cuda_rng_state.defined());
}

TEST(Checkpoint, ListingAndPruningSeeOnlyCompleteCheckpoints) {
  ScratchDir dir;
  for (int step : {30, 10, 20, 40})
    dir.write(fs::path(checkpoint_path(dir.path(), step)).filename(), "x");
  dir.write("step-00000050.ckpt.tmp.123", "partial");
  dir.write("model.pt.tmp.9", "partial");
  dir.write("notes.txt", "other");
  EXPECT_EQ(list_checkpoints(dir.path()), (std::vector<int64_t>{10, 20, 30, 40}));
  prune_checkpoints(dir.path(), 2);
  EXPECT_EQ(list_checkpoints(dir.path()), (std::vector<int64_t>{30, 40}));
  EXPECT_EQ(remove_stale_temp_files(dir.path()), 2);
  EXPECT_TRUE(fs::exists(dir.file("notes.txt")));
  EXPECT_TRUE(list_checkpoints(dir.file("missing")).empty());
}

}  // namespace
}  // namespace lowbit::train
