// SentencePiece .model files: trained here on a few KB of text written by the
// test, loaded through load_tokenizer, and checked for round trips, special
// token ids and what the tokenizer_config.json beside a model changes.
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"
#include "tests/text/tokenizer_files.h"
#include "text/error.h"
#include "text/sentencepiece_tokenizer.h"
#include "text/tokenizer.h"
#include "text/train_sentencepiece.h"

namespace lowbit::text {
namespace {

using lowbit::testing::ScratchDir;

// ~11 KB of sentences, one per line, from small word lists.
std::string corpus() {
  const std::vector<std::string> subjects = {"The shepherd", "A river", "My brother", "The old king",
                                             "Her daughter", "The wind", "Every morning the baker"};
  const std::vector<std::string> verbs = {"carried", "watched", "remembered", "followed", "answered", "gathered"};
  const std::vector<std::string> objects = {"the sheep across the hills", "a letter from the city",
                                            "the songs of the valley", "bread and water",
                                            "the light over the sea", "seven stones by the well"};
  std::string text;
  for (size_t i = 0; i < subjects.size(); ++i)
    for (size_t j = 0; j < verbs.size(); ++j)
      for (size_t k = 0; k < objects.size(); ++k)
        if ((i + j + k) % 2 == 0) text += subjects[i] + " " + verbs[j] + " " + objects[k] + ".\n";
  return text;
}

class SentencePieceModel : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef LOWBIT_WITH_SENTENCEPIECE
    GTEST_SKIP() << "lowbit was built without SentencePiece (libsentencepiece-dev not found)";
#endif
    dir_.write("corpus.txt", corpus());
  }
  // 400 = 3 specials + 256 byte pieces + ~40 characters, and room for merges.
  std::string train(const std::string& name, int vocab_size = 400, const std::string& type = "bpe",
                    const SentencePieceTraining& options = {}) {
    return train_sentencepiece(dir_.file("corpus.txt"), dir_.file(name), vocab_size, type, options);
  }
  ScratchDir dir_;
};

TEST_F(SentencePieceModel, TrainsLoadsAndRoundTrips) {
  const std::string model = train("kjv_like");
  EXPECT_EQ(model, dir_.file("kjv_like.model"));
  const auto tok = load_tokenizer(model);
  EXPECT_EQ(tok->vocab_size(), 400);
  // SentencePiece's default layout: <unk> 0, <s> 1, </s> 2, no padding.
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->pad_id(), std::nullopt);
  EXPECT_EQ(tok->token_to_id("<s>"), 1);
  EXPECT_EQ(tok->id_to_token(2), "</s>");
  EXPECT_EQ(tok->token_to_id("<0x0A>"), 3 + 0x0A);  // byte pieces follow the specials
  EXPECT_EQ(tok->token_to_id("no such piece"), std::nullopt);

  const std::vector<std::string> texts = {
      "The shepherd carried the sheep across the hills.",
      "A river answered bread and water.",
      "unseen words: zebra quartz",
      "  two spaces, a tab\tand a newline\nhere ",
      "caf\u00E9 \u65E5\u672C \U0001F600 \u00A7",  // characters the model never saw: bytes
  };
  for (const std::string& text : texts) {
    const std::vector<int32_t> ids = tok->encode(text, true);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), 1) << "BOS first";
    EXPECT_NE(ids.back(), 2) << "no EOS by default";
    EXPECT_EQ(tok->decode(ids, true), text);
    EXPECT_EQ(tok->decode(tok->encode(text, false)), text);
  }
  // Control tokens are spelled out unless skipped.
  EXPECT_EQ(tok->decode({1, 2}), "<s></s>");
  EXPECT_EQ(tok->decode({1, 2}, true), "");
  lowbit::testing::expect_error_all<Error>([&] { tok->decode({400}); }, {"id 400", "[0, 400)"});
}

TEST_F(SentencePieceModel, FrequentWordsBecomeSinglePieces) {
  const auto tok = load_tokenizer(train("words"));
  // "▁the" occurs in almost every line: BPE learns it whole. The model adds
  // the "▁" in front of a text itself (add_dummy_prefix).
  const std::optional<int32_t> the = tok->token_to_id("\u2581the");
  ASSERT_TRUE(the.has_value());
  EXPECT_EQ(tok->encode("the", false), (std::vector<int32_t>{*the}));
}

TEST_F(SentencePieceModel, UnigramAndPadding) {
  SentencePieceTraining options;
  options.pad_token = true;
  // Unigram keeps only pieces worth their likelihood: this corpus supports
  // fewer than BPE's 400 (SentencePiece says at most 326).
  const auto tok = load_tokenizer(train("unigram", 300, "unigram", options));
  EXPECT_EQ(tok->pad_id(), 3);
  EXPECT_EQ(tok->id_to_token(3), "<pad>");
  const std::string text = "Her daughter followed the light over the sea, and then?";
  EXPECT_EQ(tok->decode(tok->encode(text)), "<s>" + text);
}

TEST_F(SentencePieceModel, ReadFromACheckpointDirectoryWithConfig) {
  const std::string model = train("sp");
  ScratchDir checkpoint;
  std::filesystem::copy_file(model, checkpoint.file("tokenizer.model"));
  lowbit::testing::write_json(checkpoint, "tokenizer_config.json",
                              {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"add_eos_token", true}});
  const auto tok = load_tokenizer(checkpoint.path());
  const std::vector<int32_t> ids = tok->encode("A river", true);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(tok->decode(ids, true), "A river");
}

TEST_F(SentencePieceModel, RefusesBadArgumentsAndFiles) {
  lowbit::testing::expect_error_all<Error>([&] { train("x", 400, "word"); }, {"model_type", "\"word\"", "\"unigram\""});
  lowbit::testing::expect_error<Error>(
      [&] { train_sentencepiece(dir_.file("absent.txt"), dir_.file("x"), 100); }, "absent.txt");
  dir_.write("garbage.model", "not a protobuf");
  lowbit::testing::expect_error_all<Error>([&] { load_tokenizer(dir_.file("garbage.model")); },
                                           {dir_.file("garbage.model"), "SentencePiece"});
}

#ifndef LOWBIT_WITH_SENTENCEPIECE
TEST(SentencePieceMissing, SaysSoWhenLoading) {
  ScratchDir dir;
  dir.write("tokenizer.model", "");
  lowbit::testing::expect_error<Error>([&] { load_tokenizer(dir.file("tokenizer.model")); },
                                       "built without SentencePiece");
}
#endif

}  // namespace
}  // namespace lowbit::text
