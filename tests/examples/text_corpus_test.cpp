// Text corpora: the fixed character table, the KJV read from bible-kjv, fortune
// files checked against indexes that strfile itself writes, the document split,
// and window batches (contents, determinism, uniform starts).
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/data/text_corpus.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::data {
namespace {

using lowbit::testing::run_shell;
using lowbit::testing::message_of;
using lowbit::testing::ScratchDir;

TEST(CharVocab, MapsNewlinePrintableAsciiAndUnknown) {
  EXPECT_EQ(CharVocab::id('\n'), 0);
  // The table: ' ' .. '~' are ids 1 .. 95 in ASCII order.
  for (int c = 32; c <= 126; ++c) {
    EXPECT_EQ(CharVocab::id(static_cast<unsigned char>(c)), c - 31);
    EXPECT_EQ(CharVocab::character(c - 31), char(c));
  }
  EXPECT_EQ(CharVocab::id('\t'), CharVocab::id(' '));
  for (int c : {0, 7, 13, 127, 0xC3, 0xFF}) {
    EXPECT_EQ(CharVocab::id(static_cast<unsigned char>(c)), CharVocab::kUnknown) << c;
  }
  EXPECT_EQ(CharVocab::decode(CharVocab::encode("Caf\xC3\xA9 au lait\n")), "Caf?? au lait\n");
  EXPECT_THROW(CharVocab::character(CharVocab::kSize), c10::Error);
}

TEST(ReadKjv, ReadsEveryVerseWithoutReferences) {
  const std::vector<std::string> verses = read_kjv();
  ASSERT_EQ(verses.size(), 31102u);  // verses in the KJV (Genesis 1:1 to Revelation 22:21)
  EXPECT_EQ(verses.front(), "In the beginning God created the heaven and the earth.\n");
  EXPECT_EQ(verses[1],
            "And the earth was without form, and void; and darkness was upon the face "
            "of the deep. And the Spirit of God moved upon the face of the waters.\n");
  EXPECT_EQ(verses.back(), "The grace of our Lord Jesus Christ be with you all. Amen.\n");
}

TEST(ReadKjv, RefusesMissingAndTruncatedDataFiles) {
  ScratchDir dir;
  EXPECT_NE(message_of([&] { read_kjv(dir.path()); }).find("bible-kjv-text"), std::string::npos);
  // The package's data file cut short: the reader must report it, not return
  // part of the Bible.
  run_shell("head -c 900000 /usr/lib/bible.data > " + dir.file("bible.data") +
            " && cp /usr/lib/bible.data.conc " + dir.file("bible.data.conc"));
  const std::string message = message_of([&] { read_kjv(dir.path()); });
  EXPECT_NE(message.find("truncated or corrupt"), std::string::npos) << message;
  EXPECT_NE(message.find(dir.file("bible.data")), std::string::npos) << message;
}

// A fortune file and the index strfile (from fortune-mod) builds for it.
void write_fortunes(const ScratchDir& dir, const std::string& name, const std::string& text,
                    const std::string& strfile_flags = "") {
  dir.write(name, text);
  run_shell("strfile -s " + strfile_flags + " " + dir.file(name) + " " + dir.file(name + ".dat"));
}

TEST(ReadFortunes, SplitsEntriesLikeStrfile) {
  ScratchDir dir;
  write_fortunes(dir, "b", "Second file.\n%\n");
  write_fortunes(dir, "a", "One line.\n%\nTwo\n  lines.\n%\n\n%\n%\nLast, no separator.");
  const std::vector<std::string> all = read_fortunes(dir.path());
  // strfile keeps the blank-line entry; an entry without a final newline gets one.
  const std::vector<std::string> expected = {"One line.\n%\n", "Two\n  lines.\n%\n", "\n%\n",
                                             "Last, no separator.\n%\n", "Second file.\n%\n"};
  EXPECT_EQ(all, expected);
  EXPECT_EQ(read_fortunes(dir.path(), {"b"}), std::vector<std::string>{"Second file.\n%\n"});
}

TEST(ReadFortunes, DecodesRot13Files) {
  ScratchDir dir;
  // strfile -x sets STR_ROTATED in the index; the text is stored rot13-encoded
  // as fortunes-off ships it.
  write_fortunes(dir, "rot", "Uryyb, Jbeyq!\n%\n", "-x");
  EXPECT_EQ(read_fortunes(dir.path(), {"rot"}), std::vector<std::string>{"Hello, World!\n%\n"});
}

TEST(ReadFortunes, RefusesTruncatedFilesAndMissingIndexes) {
  ScratchDir dir;
  write_fortunes(dir, "f", "one\n%\ntwo\n%\nthree\n%\n");
  dir.write("f", "one\n%\ntwo\n");  // cut short after its index was built
  std::string message = message_of([&] { read_fortunes(dir.path()); });
  EXPECT_NE(message.find("truncated or corrupt"), std::string::npos) << message;
  EXPECT_NE(message.find(dir.file("f")), std::string::npos) << message;

  dir.write("g", "no index\n%\n");
  message = message_of([&] { read_fortunes(dir.path(), {"g"}); });
  EXPECT_NE(message.find("strfile index"), std::string::npos) << message;
  dir.write("g.dat", "short");
  message = message_of([&] { read_fortunes(dir.path(), {"g"}); });
  EXPECT_NE(message.find("strfile header"), std::string::npos) << message;
  EXPECT_NE(message_of([&] { read_fortunes(dir.file("missing")); }).find("fortunes"),
            std::string::npos);
}

TEST(ReadFortunes, ReadsTheInstalledPackage) {
  const std::vector<std::string> entries = read_fortunes();
  // The package's indexes list more than 10,000 entries; every entry ends with
  // the separator line and holds text.
  EXPECT_GT(entries.size(), 10000u);
  for (const std::string& e : entries) {
    ASSERT_GE(e.size(), 3u);
    ASSERT_EQ(e.substr(e.size() - 3), "\n%\n");
  }
}

TEST(SplitDocuments, SpreadsValidationDocumentsEvenly) {
  std::vector<std::string> docs;
  for (int i = 0; i < 10; ++i) docs.push_back("doc" + std::to_string(i) + "\n");
  const TextSplit split = split_documents(docs, 0.2);
  // Documents 4 and 9: where floor((i + 1) * 0.2) steps up.
  EXPECT_EQ(CharVocab::decode(split.valid), "doc4\ndoc9\n");
  EXPECT_EQ(CharVocab::decode(split.train), "doc0\ndoc1\ndoc2\ndoc3\ndoc5\ndoc6\ndoc7\ndoc8\n");
  EXPECT_EQ(split_documents(docs, 0.0).valid.numel(), 0);
  EXPECT_THROW(split_documents(docs, 1.0), c10::Error);
  EXPECT_THROW(split_documents({"a"}, 0.5), c10::Error);  // selects no validation document
}

TEST(SampleWindows, TargetsAreInputsShiftedByOne) {
  // Token i has value i, so each window reveals its start.
  const int64_t n = 1000, block = 16;
  const torch::Tensor tokens = torch::arange(n, torch::kInt64);
  const TextBatch batch = sample_windows(tokens, 32, block, 7, 3);
  ASSERT_EQ(batch.input.sizes(), torch::IntArrayRef({32, block}));
  for (int64_t b = 0; b < 32; ++b) {
    const int64_t start = batch.input[b][0].item<int64_t>();
    ASSERT_GE(start, 0);
    ASSERT_LE(start + block, n - 1);
    EXPECT_TRUE(batch.input[b].equal(torch::arange(start, start + block, torch::kInt64)));
    EXPECT_TRUE(batch.target[b].equal(torch::arange(start + 1, start + block + 1, torch::kInt64)));
  }
  EXPECT_TRUE(sample_windows(tokens, 32, block, 7, 3).input.equal(batch.input));
  EXPECT_FALSE(sample_windows(tokens, 32, block, 7, 4).input.equal(batch.input));
  EXPECT_FALSE(sample_windows(tokens, 32, block, 8, 3).input.equal(batch.input));
  EXPECT_THROW(sample_windows(tokens.slice(0, 0, block), 1, block, 0, 0), c10::Error);
}

TEST(SampleWindows, StartsAreUniform) {
  // 11 possible starts, 1100 draws each: a chi-square statistic with 10
  // degrees of freedom above 35 has probability < 1e-4 for a uniform sampler.
  const int64_t block = 4, starts = 11, draws = 100;
  const torch::Tensor tokens = torch::arange(block + starts, torch::kInt64);
  std::vector<double> counts(starts, 0.0);
  for (int64_t i = 0; i < draws; ++i) {
    const torch::Tensor first =
        sample_windows(tokens, starts * 11, block, 1, i).input.select(1, 0).contiguous();
    for (int64_t s : std::vector<int64_t>(first.data_ptr<int64_t>(),
                                          first.data_ptr<int64_t>() + first.numel())) {
      counts[size_t(s)] += 1.0;
    }
  }
  const double expected = double(draws * 11);
  double chi2 = 0.0;
  for (double c : counts) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 35.0);
}

TEST(EvaluationWindows, CoverTheTextEvenly) {
  const int64_t n = 101, block = 10;
  const torch::Tensor tokens = torch::arange(n, torch::kInt64);
  const TextBatch windows = evaluation_windows(tokens, block, 4);
  // Starts 0, 30, 60, 90: evenly spaced up to the last start n - 1 - block.
  const std::vector<int64_t> expected_starts = {0, 30, 60, 90};
  ASSERT_EQ(windows.input.size(0), 4);
  for (size_t k = 0; k < expected_starts.size(); ++k) {
    EXPECT_EQ(windows.input[int64_t(k)][0].item<int64_t>(), expected_starts[k]);
    EXPECT_EQ(windows.target[int64_t(k)][block - 1].item<int64_t>(), expected_starts[k] + block);
  }
  // At most (n - 1) / block non-overlapping windows.
  EXPECT_EQ(evaluation_windows(tokens, block, 1000).input.size(0), 10);
}

}  // namespace
}  // namespace lowbit::data
