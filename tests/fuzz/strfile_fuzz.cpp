// Fortune files and their strfile(1) indexes (examples/data/text_corpus.cpp).
// The input's first byte is the index's length: that many bytes become
// "cookies.dat", the rest the text file "cookies".
#include <algorithm>

#include "examples/data/text_corpus.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = lowbit::fuzz::as_text(data, size);
  const size_t index_size = size == 0 ? 0 : std::min<size_t>(data[0], size - 1);
  const std::string_view index = bytes.substr(size == 0 ? 0 : 1, index_size);
  const std::string_view text = bytes.substr(std::min(size, 1 + index_size));
  lowbit::fuzz::write_input("cookies.dat", index);
  const std::string path = lowbit::fuzz::write_input("cookies", text);
  lowbit::fuzz::expect_clean_refusal(path, [&] {
    lowbit::data::read_fortunes(lowbit::fuzz::scratch_dir().string(), {"cookies"});
  });
  return 0;
}
