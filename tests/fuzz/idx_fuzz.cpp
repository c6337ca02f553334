// IDX files of (Fashion-)MNIST, plain or gzip-compressed (examples/data/idx.cpp).
#include "examples/data/idx.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lowbit::fuzz::write_input("images-idx3-ubyte.gz", lowbit::fuzz::as_text(data, size));
  lowbit::fuzz::expect_clean_refusal(path, [&] { lowbit::data::read_idx_u8(path); });
  return 0;
}
