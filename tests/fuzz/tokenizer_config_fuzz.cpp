// transformers' tokenizer_config.json (text/tokenizer_config.cpp), read as
// loading a checkpoint's tokenizer reads it: beside a fixed, valid
// tokenizer.json, whose tokens the config's special tokens are looked up in;
// then a text is encoded with the BOS / EOS it asks for.
#include "tests/fuzz/fuzz_support.h"
#include "text/tokenizer.h"

namespace {

// A byte-pair model of six tokens; "<s>", "</s>" and "<pad>" are the seeds'
// special tokens.
constexpr const char* kTokenizerJson = R"({"version": "1.0", "truncation": null, "padding": null,
 "added_tokens": [], "normalizer": null, "pre_tokenizer": null, "post_processor": null,
 "decoder": null, "model": {"type": "BPE", "dropout": null, "unk_token": null,
 "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
 "byte_fallback": false, "ignore_merges": false,
 "vocab": {"a": 0, "b": 1, "ab": 2, "<s>": 3, "</s>": 4, "<pad>": 5}, "merges": [["a", "b"]]}})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string tokenizer_path = lowbit::fuzz::write_input("tokenizer.json", kTokenizerJson);
  const std::string config = lowbit::fuzz::write_input("tokenizer_config.json", lowbit::fuzz::as_text(data, size));
  lowbit::fuzz::expect_clean_refusal(config, [&] {
    const auto tokenizer = lowbit::text::load_tokenizer(tokenizer_path);
    (void)tokenizer->encode("abba");
  });
  return 0;
}
