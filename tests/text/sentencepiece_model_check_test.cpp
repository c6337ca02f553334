// The check of .model files that runs before libsentencepiece reads them
// (text/sentencepiece/model_check.h): models made by hand here
// (SentencePieceModelCheck, no SentencePiece needed, so they also run under
// the sanitizers) and models trained with SentencePiece, then edited
// (TrainedSentencePieceModelCheck). Each refusal must name the file and the
// fault.
#include <cmath>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"
#include "tests/text/sentencepiece_model_files.h"
#include "text/error.h"
#include "text/sentencepiece/model_check.h"
#include "text/tokenizer.h"
#include "text/train_sentencepiece.h"

namespace lowbit::text {
namespace {

using lowbit::testing::Charsmap;
using lowbit::testing::ScratchDir;
namespace pb = lowbit::testing::protobuf;

constexpr const char* kFile = "edited.model";

void expect_refused(const std::string& bytes, const std::vector<std::string>& needles) {
  std::vector<std::string> all = {kFile, "not a valid SentencePiece model"};
  all.insert(all.end(), needles.begin(), needles.end());
  lowbit::testing::expect_error_all<Error>([&] { check_sentencepiece_model(bytes, kFile); }, all);
}

TEST(SentencePieceModelCheck, AcceptsHandmadeModels) {
  const std::string plain = testing::handmade_model({"a", "b"});
  SentencePieceModelSummary summary = check_sentencepiece_model(plain, kFile);
  EXPECT_EQ(summary.pieces, 3u);
  EXPECT_EQ(summary.normalizer_trie_units, 0u);
  summary = check_sentencepiece_model(testing::handmade_model({"a"}, testing::chain_of_rules(32).blob()), kFile);
  EXPECT_EQ(summary.normalizer_trie_units, 256u * 34);
  EXPECT_EQ(summary.denormalizer_trie_units, 0u);
  // Fields this version of the format does not know are skipped, as protobuf does.
  const std::string unknown = pb::message({{200, pb::kVarint, pb::varint(~uint64_t{0})},
                                           {201, pb::kLength, "opaque"},
                                           {202, 1, std::string(8, '\x7F')},
                                           {203, pb::kFixed32, std::string(4, '\0')}});
  EXPECT_EQ(check_sentencepiece_model(plain + unknown, kFile).pieces, 3u);
}

TEST(SentencePieceModelCheck, RefusesBrokenWireFormat) {
  const std::string model = testing::handmade_model({"a", "b"});
  expect_refused("", {"ModelProto", "no pieces"});
  expect_refused(model.substr(0, model.size() - 1),
                 {"ModelProto at file offset 28: field 1 is 10 bytes long but ModelProto ends 9 bytes"});
  expect_refused(model.substr(0, model.size() / 2), {"ModelProto", "bytes long but ModelProto ends"});
  expect_refused(model + "\x48" + std::string(10, '\xFF') + "\x01",
                 {"file offset " + std::to_string(model.size() + 1), "varint is longer than 10 bytes"});
  expect_refused(model + "\x48\x80", {"varint runs past the end of ModelProto"});
  expect_refused(model + "\x48" + std::string(9, '\xFF') + "\x02", {"does not fit 64 bits"});
  expect_refused(model + "\x0A\x05" + "ab", {"field 1 is 5 bytes long but ModelProto ends 2 bytes"});
  expect_refused(model + "\x0B", {"wire type 3 (group start)"});
  expect_refused(model + "\x0C", {"wire type 4 (group end)"});
  expect_refused(model + "\x0F", {"wire type 7 (not a wire type)"});
  expect_refused(model + std::string(1, '\0'), {"field number 0"});
  expect_refused(model + "\x08\x01", {"field 1 (pieces) has wire type 0 (varint), expected 2 (length-delimited)"});
  expect_refused(model + std::string("\x1A\x00\x1A\x00", 4), {"field 3 (normalizer_spec) appears a second time"});
  expect_refused(model + "\x2D\x01\x02", {"field 5 needs 4 bytes but ModelProto ends 2 bytes"});
  expect_refused(model + "\x1A\x02\x12\x05", {"normalizer_spec", "field 2 is 5 bytes long"});
}

TEST(SentencePieceModelCheck, RefusesBadPieces) {
  const auto model_with = [](const pb::Field& piece) {
    return pb::message({testing::piece("<unk>", testing::kUnknown), piece});
  };
  expect_refused(model_with(testing::piece("")), {"pieces[1]", "piece (field 1) is empty"});
  expect_refused(model_with({1, pb::kLength, pb::message({{3, pb::kVarint, pb::varint(1)}})}),
                 {"pieces[1]", "piece (field 1) is missing"});
  expect_refused(model_with(testing::piece("ok\xC3\x28")), {"pieces[1]", "not valid UTF-8 (byte 2 of its 4)"});
  expect_refused(model_with(testing::piece("a", 7)), {"type is 7, expected 1 (NORMAL) to 6 (BYTE)"});
  expect_refused(model_with(testing::piece("a", 0)), {"type is 0"});
  expect_refused(model_with(testing::piece("a", testing::kNormal, std::nanf(""))), {"score is nan"});
  expect_refused(model_with(testing::piece(std::string("a\0b", 3), 4)), {"USER_DEFINED piece holds a NUL byte"});
  // Elsewhere a NUL is just a character.
  EXPECT_EQ(check_sentencepiece_model(model_with(testing::piece(std::string("a\0b", 3))), kFile).pieces, 2u);
}

// Each fault in a trie that libsentencepiece would walk into: the edit, then what the refusal says.
TEST(SentencePieceModelCheck, RefusesBrokenCharsmaps) {
  const auto refused = [](const std::string& blob, const std::vector<std::string>& needles) {
    std::vector<std::string> all = {"normalizer_spec", "precompiled_charsmap"};
    all.insert(all.end(), needles.begin(), needles.end());
    expect_refused(testing::handmade_model({"a", "b"}, blob), all);
  };
  const Charsmap chain = testing::chain_of_rules(2);
  const std::string blob = chain.blob();
  refused("abc", {"is 3 bytes; expected at least 8"});
  const auto with_trie_bytes = [&](uint32_t bytes) {
    return std::string(reinterpret_cast<const char*>(&bytes), 4) + blob.substr(4);
  };
  refused(with_trie_bytes(0), {"trie size is 0 bytes; expected a positive multiple of 4"});
  refused(with_trie_bytes(uint32_t(4 * chain.units.size() - 2)), {"positive multiple of 4"});
  // libsentencepiece's own test lets a size up to the blob's size pass, 4 bytes too many.
  refused(with_trie_bytes(uint32_t(blob.size() - 1) & ~3u), {"but only " + std::to_string(blob.size() - 4)});

  Charsmap edit = chain;
  edit.units[0] = Charsmap::node(256 * 100, 0, false);
  refused(edit.blob(), {"trie unit 0 (0x01900000) leads to units 25600..25855, past the trie's 1024 units"});
  edit = chain;
  const size_t first = *chain.walk("a");
  edit.units[first] = Charsmap::node(uint32_t(first ^ 4096), 'a', true);
  refused(edit.blob(), {"trie unit " + std::to_string(first), "past the trie's 1024 units"});
  edit = chain;
  edit.units[chain.leaf_of(first)] = Charsmap::leaf(2);
  refused(edit.blob(), {"leaf unit 512 has value 2, past the end of the 2 bytes of replacement strings"});
  edit = chain;
  edit.strings += "cd";
  edit.units[chain.leaf_of(first)] = Charsmap::leaf(2);
  refused(edit.blob(), {"leaf unit 512 has value 2, whose string has no NUL in the 4 bytes"});
  edit = chain;
  edit.units[first] = Charsmap::node(uint32_t(first ^ 256), 'a', true);  // its children are the root's
  refused(edit.blob(), {"trie has a cycle through unit " + std::to_string(first)});
  refused(testing::chain_of_rules(33).blob(), {"a text matches 33 rules; libsentencepiece has room for 32"});

  // The denormalizer's charsmap is walked by decode and checked the same way.
  const std::string model = testing::handmade_model({"a"});
  expect_refused(testing::with_charsmap(model, "abc", testing::kDenormalizerSpec),
                 {"denormalizer_spec", "is 3 bytes; expected at least 8"});
  EXPECT_EQ(check_sentencepiece_model(testing::with_charsmap(model, blob, testing::kDenormalizerSpec), kFile)
                .denormalizer_trie_units,
            1024u);
}

TEST(SentencePieceModelCheck, RefusesFilesOver1GiBBeforeReading) {
  ScratchDir dir;
  dir.write("huge.model", "");
  // Sparse: no disk is used, and reading it would take a gigabyte of memory.
  std::filesystem::resize_file(dir.file("huge.model"), (uintmax_t{1} << 30) + 1);
  lowbit::testing::expect_error_all<Error>([&] { read_sentencepiece_model(dir.file("huge.model")); },
                                           {dir.file("huge.model"), "1073741825 bytes", "1 GiB"});
  lowbit::testing::expect_error_all<Error>([&] { read_sentencepiece_model(dir.file("absent.model")); },
                                           {dir.file("absent.model"), "cannot be read"});
}

// ~2.5 KB of sentences, with words that NFKC changes (full-width letters, ligatures).
std::string corpus() {
  std::string text;
  const std::vector<std::string> words = {"river", "stone", "light", "bread", "water", "valley", "\uFF37ind",
                                          "\uFB01eld"};
  for (size_t i = 0; i < words.size(); ++i)
    for (size_t j = 0; j < words.size(); ++j) text += "The " + words[i] + " and the " + words[j] + ".\n";
  return text;
}

class TrainedSentencePieceModelCheck : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef LOWBIT_WITH_SENTENCEPIECE
    GTEST_SKIP() << "lowbit was built without SentencePiece (libsentencepiece-dev not found)";
#endif
    dir_.write("corpus.txt", corpus());
  }
  std::string train(const std::string& name, const std::string& normalization, const std::string& type = "bpe") {
    SentencePieceTraining options;
    options.normalization = normalization;

    return train_sentencepiece(dir_.file("corpus.txt"), dir_.file(name), kVocabSize, type, options);
  }
  std::string read(const std::string& path) { return read_sentencepiece_model(path); }
  // 3 specials + 256 byte pieces + the corpus' characters and some merges
  // (SentencePiece finds at most 289 pieces in it).
  static constexpr int kVocabSize = 280;
  ScratchDir dir_;
};

TEST_F(TrainedSentencePieceModelCheck, AcceptsModelsOfEveryNormalizationRule) {
  for (const auto& [normalization, type] : std::vector<std::pair<std::string, std::string>>{
           {"identity", "bpe"}, {"nmt_nfkc", "bpe"}, {"nmt_nfkc", "unigram"}}) {
    SCOPED_TRACE(normalization + " " + type);
    const std::string model = train(normalization + "_" + type, normalization, type);
    const SentencePieceModelSummary summary = check_sentencepiece_model(read(model), model);
    EXPECT_EQ(summary.pieces, size_t(kVocabSize));
    // Only a rule other than identity stores a trie (SentencePiece's NFKC table: tens of thousands of units).
    if (normalization == "identity") {
      EXPECT_EQ(summary.normalizer_trie_units, 0u);
    } else {
      EXPECT_GT(summary.normalizer_trie_units, 10000u);
    }
    const auto tok = load_tokenizer(model);
    const std::vector<int32_t> ids = tok->encode("The \uFF37ind and the \uFB01eld.", false);
    ASSERT_FALSE(ids.empty());
    if (normalization == "nmt_nfkc") {
      EXPECT_EQ(ids, tok->encode("The Wind and the field.", false));
    } else {
      EXPECT_EQ(tok->decode(ids), "The \uFF37ind and the \uFB01eld.");
    }
  }
}

// The tokenizer refuses what the check refuses, naming the file, before SentencePiece sees the bytes.
TEST_F(TrainedSentencePieceModelCheck, TokenizerRefusesEditedRealModels) {
  const std::string model = read(train("nfkc", "nmt_nfkc"));
  const Charsmap real = Charsmap::parse(testing::charsmap(model));
  // U+FF37 (full-width W): NFKC maps it to "W", one rule of the real trie.
  const std::string wide_w = "\uFF37";
  const size_t node = *real.walk(wide_w);
  ASSERT_TRUE(Charsmap::has_leaf(real.units[node]));
  const size_t leaf = real.leaf_of(node);
  const auto refused = [&](const std::string& name, const std::string& bytes, const std::string& needle) {
    SCOPED_TRACE(name);
    dir_.write(name, bytes);
    lowbit::testing::expect_error_all<Error>([&] { load_tokenizer(dir_.file(name)); },
                                             {dir_.file(name), "not a valid SentencePiece model", needle});
  };
  Charsmap edit = real;
  edit.units[leaf] = Charsmap::leaf(uint32_t(real.strings.size() + 16));
  refused("leaf_past_blob.model", testing::with_charsmap(model, edit.blob()),
          "leaf unit " + std::to_string(leaf) + " has value " + std::to_string(real.strings.size() + 16));
  edit = real;
  edit.strings.back() = 'x';  // the last string loses its NUL
  const size_t last_string = real.strings.rfind('\0', real.strings.size() - 2) + 1;
  edit.units[leaf] = Charsmap::leaf(uint32_t(last_string));
  refused("no_nul.model", testing::with_charsmap(model, edit.blob()), "whose string has no NUL");
  const size_t parent = *real.walk(wide_w.substr(0, 2));
  edit = real;
  // The largest offset a node can have (bit 31 would make it a leaf): 2^29 - 256 units away.
  edit.units[parent] = (uint32_t{0x1FFFFF} << 10) | (1u << 9) | (real.units[parent] & 0x1FF);
  refused("child_outside.model", testing::with_charsmap(model, edit.blob()),
          "trie unit " + std::to_string(parent));
  std::string blob = real.blob();
  blob[0] = char(blob[0] + 2);
  refused("size_not_units.model", testing::with_charsmap(model, blob), "positive multiple of 4");
  refused("truncated.model", model.substr(0, model.size() / 2), "bytes long but ModelProto ends");
  refused("truncated_by_one.model", model.substr(0, model.size() - 1), "bytes long but");
}

// At the limit the check allows, SentencePiece works: 32 rules matching one text.
TEST_F(TrainedSentencePieceModelCheck, ThirtyTwoRulesOnOnePathEncode) {
  dir_.write("chain.model", testing::handmade_model({"a", "b", "\u2581"}, testing::chain_of_rules(32).blob()));
  const auto tok = load_tokenizer(dir_.file("chain.model"));
  // The longest rule wins: 32 a's become one "b", then the 8 left another.
  const std::vector<int32_t> ids = tok->encode(std::string(40, 'a'), false);
  EXPECT_FALSE(ids.empty());
  EXPECT_EQ(tok->decode(ids).find('a'), std::string::npos);
}

}  // namespace
}  // namespace lowbit::text
