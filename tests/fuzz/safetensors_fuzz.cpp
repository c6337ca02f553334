// safetensors files (quant/safetensors.cpp): the length field, the JSON header
// and every tensor read from the data buffer, as load_safetensors and the
// memory-mapped reader of io/ validate them.
#include "quant/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string what = "fuzz.safetensors";
  lowbit::fuzz::expect_clean_refusal(what, [&] { lowbit::quant::parse_safetensors(data, size, what); });
  return 0;
}
