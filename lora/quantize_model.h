// quantize_model: replaces a model's torch::nn::Linear layers by frozen
// Linear4bit layers, selected by module path (include and skip patterns, e.g.
// keep lm_head in full precision), and reports the model's size before and
// after in bytes and bits per parameter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "lora/linear4bit.h"

namespace lowbit::lora {

struct QuantizeConfig {
  // Module path patterns (see PathPatterns): a Linear is replaced when its
  // path matches an include pattern and no skip pattern.
  std::vector<std::string> include = {".*"};
  std::vector<std::string> skip;
  Linear4bitOptions linear;
};

// Sizes count every parameter and buffer of the model; a parameter of a
// quantized weight counts once however it is stored.
struct ModelSize {
  int64_t params = 0;
  int64_t bytes = 0;
  double bits_per_param() const { return params ? 8.0 * double(bytes) / double(params) : 0.0; }
};

// The logical parameter count and stored bytes of a model (4-bit weights
// count out*in parameters in their packed bytes plus scales).
ModelSize model_size(torch::nn::Module& model);

struct QuantizeReport {
  std::vector<std::string> replaced;  // module paths, in model order
  ModelSize before, after;
  ModelSize quantized_before, quantized_after;  // the replaced layers only
  std::string to_string() const;
};

// Replaces every matching Linear in the model's module registry (see
// replace_submodule; the model must call its layers through the registry).
// The replaced Linear's weight is released in place (it becomes empty), so its
// memory is freed and a stale typed member that still calls it fails instead
// of silently running in full precision.
// Throws, changing nothing, when a pattern is invalid or selects no Linear.
QuantizeReport quantize_model(torch::nn::Module& model, const QuantizeConfig& config = {});

}  // namespace lowbit::lora
