// Hugging Face checkpoint directories: the writer's shard plan and index
// (read back with plain JSON and the whole-file safetensors reader), lazy
// reads that convert dtypes exactly and release the mapped pages, and
// errors naming the file and tensor at fault.
#include <filesystem>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/hf_checkpoint.h"
#include "quant/safetensors.h"
#include "tests/support/expect_error.h"
#include "tests/support/proc_status.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::io {
namespace {

using nlohmann::json;
using testing::expect_error_all;
using testing::ScratchDir;
namespace fs = std::filesystem;

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
}

const char* kConfig = R"({"model_type": "llama"})";

// Five float32 tensors of 400, 400, 1200, 400 and 80 bytes, in this order.
std::vector<HfTensorSpec> specs() {
  return {{"a", {10, 10}, torch::kFloat32},
          {"b", {100}, torch::kFloat32},
          {"big", {300}, torch::kFloat32},
          {"c", {4, 25}, torch::kFloat32},
          {"d", {20}, torch::kFloat32}};
}

torch::Tensor values_of(const HfTensorSpec& spec) {
  return torch::arange(int64_t(spec.bytes() / 4), torch::kFloat32).reshape(spec.shape) +
         float(spec.name.size() * 1000 + spec.name[0]);
}

std::string scratch_checkpoint(const ScratchDir& dir, uint64_t max_shard_bytes) {
  const std::string path = dir.file("ckpt");
  save_hf_checkpoint(path, kConfig, specs(), values_of, max_shard_bytes);
  return path;
}

TEST(HfCheckpoint, ShardsLikeSavePretrainedAndIndexesEveryTensor) {
  ScratchDir dir;
  const std::string path = scratch_checkpoint(dir, 800);
  // a+b fill 800 bytes; big (1200 > 800) gets a shard of its own; c+d share one.
  const json index = read_json(path + "/model.safetensors.index.json");
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 400u + 400 + 1200 + 400 + 80);
  const json expected_map = {{"a", "model-00001-of-00003.safetensors"},
                             {"b", "model-00001-of-00003.safetensors"},
                             {"big", "model-00002-of-00003.safetensors"},
                             {"c", "model-00003-of-00003.safetensors"},
                             {"d", "model-00003-of-00003.safetensors"}};
  EXPECT_EQ(index["weight_map"], expected_map);
  EXPECT_EQ(read_json(path + "/config.json"), json::parse(kConfig));
  for (const auto& spec : specs()) {
    SCOPED_TRACE(spec.name);
    const std::string shard = path + "/" + expected_map[spec.name].get<std::string>();
    const quant::SafetensorsFile file = quant::load_safetensors(shard);
    EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
    EXPECT_TRUE(torch::equal(file.tensors.at(spec.name), values_of(spec)));
  }
  EXPECT_FALSE(fs::exists(path + "/model.safetensors"));

  const HfCheckpoint checkpoint(path);
  EXPECT_TRUE(checkpoint.sharded());
  EXPECT_EQ(checkpoint.names(), (std::vector<std::string>{"a", "b", "big", "c", "d"}));
  EXPECT_EQ(checkpoint.total_bytes(), 2480u);
  EXPECT_EQ(checkpoint.file_of("big"), path + "/model-00002-of-00003.safetensors");
  for (const auto& spec : specs())
    EXPECT_TRUE(torch::equal(checkpoint.read(spec.name, torch::kFloat32), values_of(spec)));
}

TEST(HfCheckpoint, OneFileWithoutLimitAndResavingRemovesStaleShards) {
  ScratchDir dir;
  scratch_checkpoint(dir, 800);
  const std::string path = scratch_checkpoint(dir, 0);
  std::vector<std::string> files;
  for (const auto& item : fs::directory_iterator(path)) files.push_back(item.path().filename());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"config.json", "model.safetensors"}));
  const HfCheckpoint checkpoint(path);
  EXPECT_FALSE(checkpoint.sharded());
  EXPECT_EQ(checkpoint.source(), path + "/model.safetensors");
  EXPECT_TRUE(torch::equal(checkpoint.read("c", torch::kFloat32), values_of(specs()[3])));
}

TEST(HfCheckpoint, ConvertsStoredDtypesExactly) {
  ScratchDir dir;
  const torch::Tensor values = torch::randn({64, 3}) * 100;
  std::map<std::string, torch::Tensor> stored = {{"f32", values},
                                                 {"bf16", values.to(torch::kBFloat16)},
                                                 {"f16", values.to(torch::kFloat16)}};
  save_hf_checkpoint(dir.path(), kConfig, stored);
  const HfCheckpoint checkpoint(dir.path());
  for (const auto& [name, t] : stored) {
    SCOPED_TRACE(name);
    EXPECT_EQ(checkpoint.entry(name).dtype, t.scalar_type());
    // bf16 and f16 widen to float32 exactly; the same dtype is a copy.
    EXPECT_TRUE(torch::equal(checkpoint.read(name, torch::kFloat32), t.to(torch::kFloat32)));
    EXPECT_TRUE(torch::equal(checkpoint.read(name, t.scalar_type()), t));
    EXPECT_TRUE(torch::equal(checkpoint.read(name, torch::kBFloat16), t.to(torch::kBFloat16)));
  }
}

TEST(HfCheckpoint, ReadingReleasesTheMappedPages) {
  ScratchDir dir;
  // 8 tensors of 8 MiB: resident file pages after reading all of them must
  // stay far below the 64 MiB a mapping that kept its pages would hold. The
  // bound (16 MiB) leaves room for pages another part of the process maps.
  std::vector<HfTensorSpec> big;
  for (int i = 0; i < 8; ++i) big.push_back({"t" + std::to_string(i), {2 << 20}, torch::kFloat32});
  save_hf_checkpoint(dir.path(), kConfig, big,
                     [](const HfTensorSpec& s) { return torch::ones(s.shape); });
  const HfCheckpoint checkpoint(dir.path());
  const int64_t before = testing::proc_status_bytes("RssFile");
  ASSERT_GE(before, 0) << "no RssFile in /proc/self/status";
  for (const auto& spec : big)
    EXPECT_EQ(checkpoint.read(spec.name, torch::kFloat32).sum().item<float>(), float(2 << 20));
  EXPECT_LT(testing::proc_status_bytes("RssFile") - before, 16 << 20);
}

TEST(HfCheckpoint, MissingShardNamesTheIndexAndTheShard) {
  ScratchDir dir;
  const std::string path = scratch_checkpoint(dir, 800);
  fs::remove(path + "/model-00002-of-00003.safetensors");
  expect_error_all<c10::Error>([&] { HfCheckpoint checkpoint(path); },
                               {path + "/model.safetensors.index.json", "'big'",
                                "model-00002-of-00003.safetensors", "does not exist"});
}

TEST(HfCheckpoint, TensorPlacedInAShardThatLacksIt) {
  ScratchDir dir;
  const std::string path = scratch_checkpoint(dir, 800);
  json index = read_json(path + "/model.safetensors.index.json");
  index["weight_map"]["c"] = "model-00001-of-00003.safetensors";
  dir.write("ckpt/model.safetensors.index.json", index.dump());
  expect_error_all<c10::Error>([&] { HfCheckpoint checkpoint(path); },
                               {path + "/model-00001-of-00003.safetensors", "no tensor 'c'",
                                "model.safetensors.index.json"});
}

TEST(HfCheckpoint, TensorMissingFromTheIndex) {
  ScratchDir dir;
  const std::string path = scratch_checkpoint(dir, 800);
  const HfCheckpoint checkpoint(path);
  expect_error_all<c10::Error>([&] { checkpoint.read("model.norm.weight", torch::kFloat32); },
                               {path + "/model.safetensors.index.json",
                                "no tensor 'model.norm.weight'", "weight_map"});
}

TEST(HfCheckpoint, RefusesDirectoriesWithoutSafetensorsAndBadIndexes) {
  ScratchDir dir;
  expect_error_all<c10::Error>([&] { HfCheckpoint checkpoint(dir.path()); },
                               {dir.path(), "model.safetensors", "model.safetensors.index.json"});
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "../../etc/passwd"}})");
  expect_error_all<c10::Error>([&] { HfCheckpoint checkpoint(dir.path()); },
                               {"model.safetensors.index.json", "\"a\"", "../../etc/passwd"});
  dir.write("model.safetensors.index.json", R"({"metadata": {}})");
  expect_error_all<c10::Error>([&] { HfCheckpoint checkpoint(dir.path()); },
                               {"model.safetensors.index.json", "weight_map"});
}

TEST(HfCheckpoint, WriterChecksWhatItIsGiven) {
  ScratchDir dir;
  expect_error_all<c10::Error>([&] { save_hf_checkpoint(dir.path(), "[1, 2]", specs(), values_of); },
                               {"config_json", "JSON object"});
  expect_error_all<c10::Error>(
      [&] {
        save_hf_checkpoint(dir.path(), kConfig, specs(),
                           [](const HfTensorSpec&) { return torch::zeros({3}); });
      },
      {"tensor 'a'", "spec"});
}

}  // namespace
}  // namespace lowbit::io
