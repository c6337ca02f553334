// quantize_model: converts a model's torch::nn::Linear layers, selected by
// module path, into frozen quantized layers, NF4 / FP4 (Linear4bit) or int8
// (Linear8bit, LLM.int8()), with per-layer formats by pattern (e.g.
// attention int8, MLP NF4) and a skip list (modules_to_not_convert); it
// reports per layer and in total the bytes before and after, bits per
// parameter and each weight's quantization error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "quant/metrics.h"

namespace lowbit::lora {

// What a selected Linear becomes: Linear4bit (NF4 / FP4), Linear8bit, or
// nothing (it stays a float Linear).
enum class LinearFormat : uint8_t { NF4, FP4, Int8, None };

// "nf4", "fp4", "int8", "none" (as written in recipes and reports).
const char* linear_format_name(LinearFormat format);
// Parses those names (case-insensitive); throws listing them.
LinearFormat parse_linear_format(const std::string& name);

// Layers whose path matches `pattern` (see PathPatterns) take `format`.
struct FormatOverride {
  std::string pattern;
  LinearFormat format = LinearFormat::NF4;
};

struct QuantizeConfig {
  // Module path patterns (see PathPatterns): a Linear is converted when its
  // path matches an include pattern and no modules_to_not_convert pattern
  // (bitsandbytes' and transformers' name for the skip list, e.g. lm_head).
  std::vector<std::string> include = {".*"};
  std::vector<std::string> modules_to_not_convert;
  // The format of a converted layer: that of the first override whose
  // pattern matches its path, else `format`.
  LinearFormat format = LinearFormat::NF4;
  std::vector<FormatOverride> overrides;
  // Options of the NF4 / FP4 layers (block size, double quantization,
  // compute dtype, backend); their format comes from `format` / `overrides`.
  Linear4bitOptions four_bit;
  // Options of the int8 layers (LLM.int8() threshold, cache, backend).
  Linear8bitOptions int8;
  // Every include, modules_to_not_convert and override pattern must match
  // at least one Linear of the model (catches misspelt layer names).
  bool strict = false;
};

// Sizes count every parameter and buffer of the model; a parameter of a
// quantized weight counts once however it is stored.
struct ModelSize {
  int64_t params = 0;
  int64_t bytes = 0;
  double bits_per_param() const { return params ? 8.0 * double(bytes) / double(params) : 0.0; }
};

// The logical parameter count and stored bytes of a model (4-bit and int8
// weights count out*in parameters in their codes plus scales; an int8
// layer's dequantized cache counts while it is held).
ModelSize model_size(torch::nn::Module& model);

// One converted layer: weight and bias, before and after.
struct LayerReport {
  std::string path;
  LinearFormat format = LinearFormat::NF4;
  ModelSize before, after;
  quant::ErrorReport error;  // of the weight against its float original
};

struct QuantizeReport {
  std::vector<std::string> replaced;  // module paths, in model order
  std::vector<LayerReport> layers;    // the same layers, in the same order
  ModelSize before, after;
  ModelSize quantized_before, quantized_after;  // the replaced layers only
  // 1 - after / before, of the whole model's bytes.
  double saved_fraction() const;
  // One line: layers converted, their size and the model's, before and after.
  std::string to_string() const;
  // A table: per layer format, bytes before and after, bits per parameter,
  // relative error, SNR and cosine; then the totals and the share saved.
  std::string to_table() const;
};

// Converts every selected Linear in place (see replace_submodule: a
// lowbit::nn::Linear takes the quantized layer as its implementation, any
// other Linear is swapped in its parent's module registry), one layer at a
// time, so that peak memory stays near the converted model plus one layer
// (each replaced float weight is released as soon as its layer is done).
// Throws, changing nothing, when a pattern is invalid, selects no Linear to
// convert, (strict) matches nothing, or a selected torch::nn::Linear is also
// held outside the module registry (a typed member; see check_replaceable).
QuantizeReport quantize_model(torch::nn::Module& model, const QuantizeConfig& config = {});

}  // namespace lowbit::lora
