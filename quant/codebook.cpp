#include "quant/codebook.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace lowbit::quant {
namespace {

// Block sizes: bitsandbytes accepts 64..4096 for 8-bit blockwise and 32..4096
// for 4-bit; defaults are 4096 (quantize_blockwise) and 64 (quantize_4bit).
constexpr std::array<FormatInfo, 4> kFormats = {{
    {Format::DynamicSigned, "dynamic", 8, kernels::kMinBlocksize8bit, 4096},
    {Format::DynamicUnsigned, "dynamic_unsigned", 8, kernels::kMinBlocksize8bit, 4096},
    {Format::NF4, "nf4", 4, kernels::kMinBlocksize4bit, 64},
    {Format::FP4, "fp4", 4, kernels::kMinBlocksize4bit, 64},
}};

template <size_t N>
torch::Tensor to_tensor(const std::array<float, N>& values) {
  return torch::tensor(std::vector<float>(values.begin(), values.end()), torch::kFloat32);
}

}  // namespace

const FormatInfo& format_info(Format f) { return kFormats[size_t(f)]; }

Format parse_format(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  for (const auto& info : kFormats)
    if (lower == info.name) return info.format;
  TORCH_CHECK(false, "unknown quantization format '", name,
              "'; expected one of: dynamic, dynamic_unsigned, nf4, fp4");
}

kernels::Format4 to_format4(Format f) {
  TORCH_CHECK(f == Format::NF4 || f == Format::FP4, "format '", format_info(f).name,
              "' is not a 4-bit format; expected nf4 or fp4");
  return f == Format::NF4 ? kernels::Format4::NF4 : kernels::Format4::FP4;
}

torch::Tensor codebook(Format f) {
  switch (f) {
    case Format::DynamicSigned: return create_dynamic_map(true);
    case Format::DynamicUnsigned: return create_dynamic_map(false);
    case Format::NF4:
    case Format::FP4: return to_tensor(kernels::format4_table(to_format4(f)).value);
  }
  TORCH_CHECK(false, "unreachable");
}

torch::Tensor create_dynamic_map(bool is_signed) { return to_tensor(kernels::dynamic_map(is_signed)); }

}  // namespace lowbit::quant
