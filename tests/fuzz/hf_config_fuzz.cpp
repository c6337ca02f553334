// Hugging Face config.json of the Llama family (io/hf_config.cpp).
#include "io/hf_config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string what = "config.json";
  lowbit::fuzz::expect_clean_refusal(what, [&] {
    lowbit::io::parse_llama_config(std::string(lowbit::fuzz::as_text(data, size)), what);
  });
  return 0;
}
