// bitsandbytes' quant_state JSON of a 4-bit weight (quant/bnb_format.cpp),
// read beside the tensors of one valid [8, 16] nf4 or fp4 weight at block
// size 64 (nested at block size 256 when the JSON mentions nesting), so
// inputs that keep that shape reach the checks that follow the JSON.
#include <string_view>

#include "quant/bnb_format.h"
#include "quant/codebook.h"
#include "tests/fuzz/fuzz_support.h"

using lowbit::quant::Format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = lowbit::fuzz::as_text(data, size);
  const Format format = text.find("fp4") != std::string_view::npos ? Format::FP4 : Format::NF4;
  const bool nested = text.find("nested") != std::string_view::npos;
  lowbit::quant::StateDict sd;
  sd["weight.quant_state.bitsandbytes__" + std::string(lowbit::quant::format_info(format).name)] =
      torch::from_blob(const_cast<uint8_t*>(data), {int64_t(size)}, torch::kUInt8).clone();
  sd["weight"] = torch::zeros({64, 1}, torch::kUInt8);
  sd["weight.quant_map"] = lowbit::quant::codebook(format);
  if (nested) {
    sd["weight.absmax"] = torch::zeros({2}, torch::kUInt8);
    sd["weight.nested_absmax"] = torch::ones({1});
    sd["weight.nested_quant_map"] = lowbit::quant::codebook(Format::DynamicSigned);
  } else {
    sd["weight.absmax"] = torch::ones({2});
  }
  const std::string what = "fuzz.safetensors";
  lowbit::fuzz::expect_clean_refusal(what, [&] { lowbit::quant::from_bnb_4bit(sd, "", what); });
  return 0;
}
