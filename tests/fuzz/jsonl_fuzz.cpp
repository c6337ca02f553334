// JSONL training records (examples/data/token_corpus.cpp).
#include "examples/data/token_corpus.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lowbit::fuzz::write_input("records.jsonl", lowbit::fuzz::as_text(data, size));
  lowbit::fuzz::expect_clean_refusal(path, [&] { lowbit::data::read_jsonl(path); });
  return 0;
}
