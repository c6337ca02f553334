// Subword training text: JSONL and plain-text records (with errors that name
// the file, line and key), the prompt template, loss masks that cover the
// response and eos but never bos or the prompt, and packed windows (contents
// against the stream, every window once per epoch, determinism).
#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/data/image_batches.h"
#include "examples/data/token_corpus.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::data {
namespace {

using lowbit::testing::expect_error_all;

// A stand-in tokenizer with ids one can work out by hand: one id per byte.
std::vector<int32_t> byte_ids(const std::string& s) {
  return std::vector<int32_t>(s.begin(), s.end());
}

TEST(TokenCorpus, ReadsJsonlTextAndPromptResponseRecords) {
  lowbit::testing::ScratchDir dir;
  dir.write("d.jsonl",
            "{\"text\": \"plain \\u00e9\"}\n"
            "\n"
            "{\"prompt\": \"Q1\", \"response\": \"A1\", \"id\": 7}\n");
  RecordFormat format;
  format.prompt_template = "### Q: {prompt}\n### A: ";
  const auto records = read_jsonl(dir.file("d.jsonl"), format);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].prompt, "");
  EXPECT_EQ(records[0].text, "plain \xc3\xa9");  // the JSON escape decoded to UTF-8
  EXPECT_EQ(records[1].prompt, "### Q: Q1\n### A: ");
  EXPECT_EQ(records[1].text, "A1");
}

TEST(TokenCorpus, JsonlErrorsNameFileLineAndKey) {
  lowbit::testing::ScratchDir dir;
  const auto write_and_read = [&](const std::string& body) {
    dir.write("bad.jsonl", body);
    return read_jsonl(dir.file("bad.jsonl"));
  };
  const std::string path = dir.file("bad.jsonl");
  expect_error_all([&] { write_and_read("{\"text\": \"a\"}\n{\"text\": 3}\n"); },
                   {path + ":2", "\"text\"", "string", "number"});
  expect_error_all([&] { write_and_read("{\"text\": \"a\"}\n{\"text\": \n"); },
                   {path + ":2", "not valid JSON"});
  expect_error_all([&] { write_and_read("{\"prompt\": \"p\"}\n"); },
                   {path + ":1", "\"prompt\"", "also needs \"response\""});
  expect_error_all([&] { write_and_read("{\"body\": \"x\"}\n"); },
                   {path + ":1", "\"text\"", "\"prompt\"", "\"response\""});
  expect_error_all([&] { write_and_read("[1, 2]\n"); }, {path + ":1", "JSON object", "array"});
  // Found by tests/fuzz/jsonl_fuzz: nlohmann refuses a number beyond double's
  // range with out_of_range, not parse_error, and that escaped unnamed.
  expect_error_all([&] { write_and_read("{\"text\": \"a\", \"n\": 8e888}\n"); },
                   {path + ":1", "not valid JSON", "number overflow"});
  expect_error_all([&] { write_and_read("\n\n"); }, {path, "no records"});
  expect_error_all([&] { read_jsonl(dir.file("missing.jsonl")); },
                   {dir.file("missing.jsonl"), "cannot open"});
}

TEST(TokenCorpus, PlainTextSplitsAtBlankLines) {
  lowbit::testing::ScratchDir dir;
  dir.write("t.txt", "first line\nsecond line\n\n  \t\nnext doc\n\n\n");
  const auto records = read_text_documents(dir.file("t.txt"));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].text, "first line\nsecond line\n");
  EXPECT_EQ(records[1].text, "next doc\n");
}

TEST(TokenCorpus, LossCoversResponseAndEosOnly) {
  const std::vector<TextRecord> records = {{"P:", "ab"}, {"", "c"}};
  const auto stream = tokenize_records(records, byte_ids, /*bos=*/1, /*eos=*/2);
  // By hand: [bos P : a b eos] [bos c eos].
  const std::vector<int64_t> ids = {1, 'P', ':', 'a', 'b', 2, 1, 'c', 2};
  const std::vector<bool> learn = {false, false, false, true, true, true, false, true, true};
  ASSERT_EQ(stream.ids.numel(), int64_t(ids.size()));
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(stream.ids[int64_t(i)].item<int64_t>(), ids[i]) << i;
    EXPECT_EQ(stream.learn[int64_t(i)].item<bool>(), learn[i]) << i;
  }
  // Packed into windows of 4 (+1): window 0 = tokens 0..4, window 1 = 4..8.
  EXPECT_EQ(packed_windows(stream, 4), 2);
  const auto batch = packed_range(stream, 4, 0, 2);
  const std::vector<int64_t> input = {1, 'P', ':', 'a', 'b', 2, 1, 'c'};
  // labels[t] = ids[t + 1] where that token is learned, else -100.
  const std::vector<int64_t> labels = {-100, -100, 'a', 'b', 2, -100, 'c', 2};
  EXPECT_TRUE(torch::equal(batch.input.flatten(), torch::tensor(input)));
  EXPECT_TRUE(torch::equal(batch.labels.flatten(), torch::tensor(labels)));
}

TEST(TokenCorpus, PackedBatchesVisitEveryWindowOncePerEpoch) {
  std::vector<TextRecord> records;
  for (int i = 0; i < 40; ++i) records.push_back({"", std::string(size_t(7 + i % 5), char('a' + i % 26))});
  const auto stream = tokenize_records(records, byte_ids, std::nullopt, 0);
  const int64_t block = 8, windows = packed_windows(stream, block), batch = 3;
  ASSERT_GT(windows, 10);
  PackedBatches batches(stream, block, batch, /*seed=*/5);
  PackedBatches again(stream, block, batch, /*seed=*/5);
  // Each row must equal one of the windows; map rows back to their window by
  // content (windows are distinct here because runs of letters shift).
  const auto all = packed_range(stream, block, 0, windows);
  std::multiset<int64_t> seen;
  const int64_t batches_in_epoch = windows / batch;
  for (int64_t index = 0; index < batches_in_epoch; ++index) {
    const auto b = batches.batch(index);
    ASSERT_EQ(b.input.sizes(), torch::IntArrayRef({batch, block}));
    EXPECT_TRUE(torch::equal(b.input, again.batch(index).input));
    for (int64_t r = 0; r < batch; ++r) {
      int64_t match = -1;
      for (int64_t w = 0; w < windows; ++w)
        if (torch::equal(all.input[w], b.input[r]) && torch::equal(all.labels[w], b.labels[r]))
          match = w;
      ASSERT_GE(match, 0);
      seen.insert(match);
    }
  }
  // Within the first epoch no window repeats.
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), seen.size());
  // Another seed gives another order.
  EXPECT_FALSE(torch::equal(PackedBatches(stream, block, batch, 6).batch(0).input,
                            PackedBatches(stream, block, batch, 5).batch(0).input));
}

// The cached epoch order changes nothing: every batch over three epochs, in
// order and then out of order (a resume jumps back and forth), holds window
// epoch_permutation(windows, seed, p / windows)[p % windows] at position p,
// computed here afresh for each position as the trainer did before caching.
TEST(TokenCorpus, PackedBatchesFollowTheEpochPermutations) {
  std::vector<TextRecord> records;
  for (int i = 0; i < 30; ++i)
    records.push_back({"", std::string(size_t(5 + i % 7), char('a' + i % 26))});
  const auto stream = tokenize_records(records, byte_ids, std::nullopt, 0);
  const int64_t block = 6, windows = packed_windows(stream, block);
  const int64_t batch = windows % 4 != 0 ? 4 : 5;
  ASSERT_NE(windows % batch, 0);  // some batches straddle two epochs
  const auto all = packed_range(stream, block, 0, windows);
  const int64_t count = 3 * windows / batch;
  std::vector<int64_t> visit;
  for (int64_t i = 0; i < count; ++i) visit.push_back(i);
  for (int64_t i = count - 1; i >= 0; i -= 3) visit.push_back(i);
  PackedBatches batches(stream, block, batch, /*seed=*/9);
  for (const int64_t index : visit) {
    const PackedBatch b = batches.batch(index);
    for (int64_t r = 0; r < batch; ++r) {
      const int64_t p = index * batch + r;
      const int64_t w = epoch_permutation(windows, 9, p / windows)[p % windows].item<int64_t>();
      EXPECT_TRUE(torch::equal(b.input[r], all.input[w])) << "batch " << index << " row " << r;
      EXPECT_TRUE(torch::equal(b.labels[r], all.labels[w])) << "batch " << index << " row " << r;
    }
  }
}

TEST(TokenCorpus, SplitKeepsRecordsWhole) {
  std::vector<TextRecord> records;
  for (int i = 0; i < 20; ++i) records.push_back({"p" + std::to_string(i), "t" + std::to_string(i)});
  const auto split = split_records(records, 0.25);
  EXPECT_EQ(split.valid.size(), 5u);
  EXPECT_EQ(split.train.size(), 15u);
  for (const auto& r : split.valid) EXPECT_EQ(r.prompt.substr(1), r.text.substr(1));
}

}  // namespace
}  // namespace lowbit::data
