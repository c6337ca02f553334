// Hugging Face tokenizer.json files (text/): the file is loaded, then a short
// mixed-script text is encoded and decoded with it, since parts of a file
// (merges, patterns, templates) are only used then.
#include "tests/fuzz/fuzz_support.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lowbit::fuzz::write_input("tokenizer.json", lowbit::fuzz::as_text(data, size));
  lowbit::fuzz::expect_clean_refusal(path, [&] {
    const auto tokenizer = lowbit::text::load_tokenizer(path);
    const std::vector<int32_t> ids = tokenizer->encode("Hello, wörld! 12 ab  \n");
    (void)tokenizer->decode(ids);
  });
  return 0;
}
