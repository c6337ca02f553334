// Quantization formats and their codebooks as tensors: the 8-bit dynamic maps
// (signed / unsigned, bitsandbytes' create_dynamic_map) and the 4-bit NF4 and
// FP4 tables. One table of formats; the values come from kernels/codebook.h.
#pragma once

#include <string>

#include <torch/types.h>

#include "kernels/backend.h"

namespace lowbit::quant {

enum class Format : uint8_t { DynamicSigned, DynamicUnsigned, NF4, FP4 };

struct FormatInfo {
  Format format;
  const char* name;  // as written in files and recipes: "dynamic", "dynamic_unsigned", "nf4", "fp4"
  int bits;          // 8 or 4
  int min_blocksize;
  int default_blocksize;
};

const FormatInfo& format_info(Format f);
// Parses a format name (case-insensitive); throws listing the known names.
Format parse_format(const std::string& name);
// The 4-bit kernels' format for NF4 / FP4 (throws for 8-bit formats).
kernels::Format4 to_format4(Format f);

// The codebook of a format: float32 tensor of 256 (8-bit) or 16 (4-bit) values.
// 4-bit tables are indexed by code (FP4's are not sorted by value).
torch::Tensor codebook(Format f);

// bitsandbytes' dynamic map: `is_signed` selects the signed (state1, one-state
// optimizers, double quantization) or the unsigned (Adam's state2) variant.
torch::Tensor create_dynamic_map(bool is_signed = true);

}  // namespace lowbit::quant
