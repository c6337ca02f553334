// What load_tokenizer refuses, and how it says so: every message names the
// file, the JSON key path, the offending value and what is supported.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"
#include "tests/text/tokenizer_files.h"
#include "text/error.h"
#include "text/tokenizer.h"

namespace lowbit::text {
namespace {

using lowbit::testing::json;
using lowbit::testing::ScratchDir;

// A valid byte-level tokenizer.json ("a", "b", merge to "ab") to break one key at a time.
json valid_file() {
  json model = lowbit::testing::bpe_model({{"a", 0}, {"b", 1}, {"ab", 2}}, json::array({"a b"}));
  json file = lowbit::testing::tokenizer_json(model);
  file["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  file["decoder"] = {{"type", "ByteLevel"}};
  return file;
}

// Loading `file` must fail with every needle, and the file's path, in the message.
void expect_refused(const json& file, std::vector<std::string> needles) {
  ScratchDir dir;
  const std::string path = lowbit::testing::write_json(dir, "tokenizer.json", file);
  needles.push_back(path);
  lowbit::testing::expect_error_all<Error>([&] { load_tokenizer(path); }, needles);
}

TEST(LoadErrors, TheValidFileLoads) {
  ScratchDir dir;
  const auto tok = load_tokenizer(lowbit::testing::write_json(dir, "tokenizer.json", valid_file()));
  EXPECT_EQ(tok->encode("ab"), (std::vector<int32_t>{2}));
}

TEST(LoadErrors, UnknownFileTypeMissingPathsAndEmptyDirectories) {
  ScratchDir dir;
  dir.write("tokenizer.txt", "hello");
  lowbit::testing::expect_error_all<Error>(
      [&] { load_tokenizer(dir.file("tokenizer.txt")); },
      {dir.file("tokenizer.txt"), "unknown tokenizer file type", "\".txt\"", "tokenizer.json", ".model"});
  lowbit::testing::expect_error_all<Error>([&] { load_tokenizer(dir.file("absent")); },
                                           {dir.file("absent"), "does not exist"});
  ScratchDir empty;
  lowbit::testing::expect_error_all<Error>([&] { load_tokenizer(empty.path()); },
                                           {empty.path(), "neither tokenizer.json nor tokenizer.model"});
}

TEST(LoadErrors, BadJson) {
  ScratchDir dir;
  dir.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\",");
  lowbit::testing::expect_error_all<Error>([&] { load_tokenizer(dir.file("tokenizer.json")); },
                                           {dir.file("tokenizer.json"), "not valid JSON", "byte"});
  expect_refused(json::array({1, 2}), {"top-level value", "JSON object"});
  // The same reader's bug that tests/fuzz/jsonl_fuzz found in JSONL: nlohmann
  // refuses a number beyond double's range with out_of_range, not
  // parse_error, and that escaped as a bare nlohmann exception.
  dir.write("tokenizer.json", "{\"version\": 1e999}");
  lowbit::testing::expect_error_all<Error>([&] { load_tokenizer(dir.file("tokenizer.json")); },
                                           {dir.file("tokenizer.json"), "not valid JSON", "number overflow"});
}

TEST(LoadErrors, UnsupportedModelType) {
  json file = valid_file();
  file["model"]["type"] = "WordPiece";
  expect_refused(file, {"model.type", "\"WordPiece\"", "not supported", "\"BPE\""});
  file = valid_file();
  file.erase("model");
  expect_refused(file, {"model", "missing"});
}

TEST(LoadErrors, UnsupportedPipelineStages) {
  json file = valid_file();
  file["pre_tokenizer"] = {{"type", "Sequence"},
                           {"pretokenizers", {{{"type", "Digits"}}, {{"type", "BertPreTokenizer"}}}}};
  expect_refused(file, {"pre_tokenizer.pretokenizers[1].type", "\"BertPreTokenizer\"", "\"ByteLevel\"", "\"Split\""});

  file = valid_file();
  file["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
  expect_refused(file, {"normalizer.type", "\"Precompiled\"", "\"NFC\"", "\"Replace\""});

  file = valid_file();
  file["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}};
  expect_refused(file, {"decoder.type", "\"WordPiece\"", "\"ByteFallback\""});

  file = valid_file();
  file["post_processor"] = {{"type", "BertProcessing"}};
  expect_refused(file, {"post_processor.type", "\"BertProcessing\"", "\"TemplateProcessing\""});

  file = valid_file();
  file["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(ab"}}}, {"behavior", "Isolated"}};
  expect_refused(file, {"pre_tokenizer.pattern.Regex", "cannot compile", "(ab"});

  file = valid_file();
  file["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "a"}}}, {"behavior", "Sideways"}};
  expect_refused(file, {"pre_tokenizer.behavior", "\"Sideways\"", "\"Isolated\""});

  file = valid_file();
  file["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "sometimes"}};
  expect_refused(file, {"pre_tokenizer.prepend_scheme", "\"sometimes\"", "\"first\""});

  file = valid_file();
  file["decoder"] = {{"type", "Replace"}, {"pattern", {{"Regex", "(a)"}}}, {"content", "$1"}};
  expect_refused(file, {"decoder.content", "\"$1\"", "group references"});
}

TEST(LoadErrors, BrokenVocabularyAndMerges) {
  json file = valid_file();
  file["model"]["merges"] = json::array({"a b", "a c"});
  expect_refused(file, {"model.merges[1]", "\"c\"", "not in model.vocab"});

  file = valid_file();
  file["model"]["merges"] = json::array({"a b c"});
  expect_refused(file, {"model.merges[0]", "\"a b c\"", "two tokens"});

  file = valid_file();
  file["model"]["merges"] = json::array({json::array({"a"})});
  expect_refused(file, {"model.merges[0]", "[\"a\"]"});

  file = valid_file();
  file["model"]["vocab"]["c"] = -4;
  expect_refused(file, {"model.vocab", "\"c\"", "-4"});

  file = valid_file();
  file["model"]["vocab"]["c"] = 1;
  expect_refused(file, {"model.vocab", "\"b\"", "\"c\"", "same id 1"});

  file = valid_file();
  file["model"]["vocab"]["c"] = 2000000000;
  expect_refused(file, {"ids reach 2000000000", "not supported"});

  file = valid_file();
  file["model"]["dropout"] = 0.1;
  expect_refused(file, {"model.dropout", "0.1", "BPE-dropout"});
}

TEST(LoadErrors, TemplatesMustDefineTheirTokens) {
  json file = valid_file();
  file["post_processor"] = lowbit::testing::bos_template("<s>", 7);
  expect_refused(file, {"post_processor", "id 7", "no token"});
  file["post_processor"]["special_tokens"] = json::object();
  expect_refused(file, {"post_processor.single[0].SpecialToken.id", "special_tokens"});
}

TEST(LoadErrors, ConfigNamesUnknownToken) {
  ScratchDir dir;
  lowbit::testing::write_json(dir, "tokenizer.json", valid_file());
  const std::string config = lowbit::testing::write_json(dir, "tokenizer_config.json", {{"eos_token", "</s>"}});
  lowbit::testing::expect_error_all<Error>([&] { load_tokenizer(dir.path()); },
                                           {config, "eos_token", "\"</s>\"", "not a token"});
  lowbit::testing::write_json(dir, "tokenizer_config.json", {{"bos_token", 3}});
  lowbit::testing::expect_error_all<Error>([&] { load_tokenizer(dir.path()); }, {config, "bos_token", "3"});
}

TEST(LoadErrors, UnknownTokenMissingFromTheVocabulary) {
  // Found only when a character needs it, as in the Rust library.
  ScratchDir dir;
  json file = valid_file();
  file["pre_tokenizer"] = nullptr;
  file["decoder"] = nullptr;
  file["model"]["unk_token"] = "<unk>";
  const auto tok = load_tokenizer(lowbit::testing::write_json(dir, "tokenizer.json", file));
  EXPECT_EQ(tok->encode("ab"), (std::vector<int32_t>{2}));
  lowbit::testing::expect_error_all<Error>([&] { tok->encode("abc"); },
                                           {"model.unk_token", "\"<unk>\"", "not in model.vocab"});
  // Without a decoder, tokens are joined with spaces.
  EXPECT_EQ(tok->decode({0, 2}), "a ab");
}

}  // namespace
}  // namespace lowbit::text
