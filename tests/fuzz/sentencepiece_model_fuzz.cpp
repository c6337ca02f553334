// SentencePiece .model files (text/sentencepiece/model_check.h): the check
// that stands between a downloaded file and libsentencepiece, which trusts
// the file's tries. Called directly, without the module (which the sanitizer
// runtime cannot load), on the bytes as they would be read.
#include "tests/fuzz/fuzz_support.h"
#include "text/sentencepiece/model_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = "fuzz.model";
  lowbit::fuzz::expect_clean_refusal(file, [&] {
    (void)lowbit::text::check_sentencepiece_model(lowbit::fuzz::as_text(data, size), file);
  });
  return 0;
}
