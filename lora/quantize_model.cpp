#include "lora/quantize_model.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iomanip>
#include <set>
#include <sstream>

#include "lora/in_place_layer.h"
#include "lora/lora_linear.h"
#include "lora/module_paths.h"

namespace lowbit::lora {
namespace {

int64_t bytes_of(const torch::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

// Adds a module's own parameters and buffers (not its children's), counting
// a tensor shared by several modules once.
void add_module(torch::nn::Module& module, std::set<const void*>& seen, ModelSize& size) {
  torch::nn::Module& m = layer_impl(module);  // an InPlaceLayer's tensors are its impl's
  if (auto* q = dynamic_cast<Linear4bitImpl*>(&m)) {
    // The codes and scales are its buffers; count them as out*in parameters.
    const quant::StorageReport s = q->storage();
    size.params += s.params;
    size.bytes += s.total_bytes();
  } else if (auto* q8 = dynamic_cast<Linear8bitImpl*>(&m)) {
    const quant::StorageReport s = q8->storage();
    size.params += s.params;
    size.bytes += s.total_bytes() + q8->cache_bytes();
  } else {
    for (const auto& b : m.named_buffers(/*recurse=*/false))
      if (b.value().defined() && seen.insert(b.value().unsafeGetTensorImpl()).second)
        size.bytes += bytes_of(b.value());
  }
  for (const auto& p : m.named_parameters(/*recurse=*/false)) {
    if (!p.value().defined() || !seen.insert(p.value().unsafeGetTensorImpl()).second) continue;
    size.params += p.value().numel();
    size.bytes += bytes_of(p.value());
  }
}

ModelSize size_of(torch::nn::Module& m) {
  std::set<const void*> seen;
  ModelSize s;
  add_module(m, seen, s);
  return s;
}

std::string describe(const ModelSize& s) {
  std::ostringstream os;
  os << s.params << " params, " << s.bytes << " bytes (" << std::fixed << std::setprecision(3)
     << s.bits_per_param() << " bits/param)";
  return os.str();
}

// Throws when `strict` and a pattern of `patterns` matched none of `paths`.
void check_all_match(const PathPatterns& patterns, const std::vector<std::string>& paths,
                     const char* option) {
  for (size_t i = 0; i < patterns.size(); ++i) {
    const PathPatterns one({patterns.pattern(i)}, option);
    const bool hit = std::any_of(paths.begin(), paths.end(),
                                 [&](const std::string& p) { return one.matches(p); });
    TORCH_CHECK(hit, "quantize_model (strict): ", option, " pattern '", patterns.pattern(i),
                "' matches no torch::nn::Linear of the model");
  }
}

std::shared_ptr<torch::nn::Module> convert(const torch::nn::Linear& linear, LinearFormat format,
                                           const QuantizeConfig& config) {
  if (format == LinearFormat::Int8) return std::make_shared<Linear8bitImpl>(linear, config.int8);
  Linear4bitOptions options = config.four_bit;
  options.format(format == LinearFormat::FP4 ? quant::Format::FP4 : quant::Format::NF4);
  return std::make_shared<Linear4bitImpl>(linear, options);
}

torch::Tensor dequantized(torch::nn::Module& m) {
  if (auto* q = dynamic_cast<Linear4bitImpl*>(&m)) return q->dequantized_weight();
  return dynamic_cast<Linear8bitImpl&>(m).dequantized_weight();
}

}  // namespace

const char* linear_format_name(LinearFormat format) {
  switch (format) {
    case LinearFormat::NF4: return "nf4";
    case LinearFormat::FP4: return "fp4";
    case LinearFormat::Int8: return "int8";
    case LinearFormat::None: return "none";
  }
  return "unknown";
}

LinearFormat parse_linear_format(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  for (LinearFormat f : {LinearFormat::NF4, LinearFormat::FP4, LinearFormat::Int8, LinearFormat::None})
    if (lower == linear_format_name(f)) return f;
  TORCH_CHECK(false, "unknown layer format '", name, "'; expected nf4, fp4, int8 or none");
}

ModelSize model_size(torch::nn::Module& model) {
  ModelSize size;
  std::set<const void*> seen;
  for (const auto& m : model.modules(/*include_self=*/true)) add_module(*m, seen, size);
  return size;
}

double QuantizeReport::saved_fraction() const {
  return before.bytes ? 1.0 - double(after.bytes) / double(before.bytes) : 0.0;
}

std::string QuantizeReport::to_string() const {
  std::ostringstream os;
  os << "quantized " << replaced.size() << " linear layers: " << describe(quantized_before)
     << " -> " << describe(quantized_after) << "; model: " << describe(before) << " -> "
     << describe(after);
  return os.str();
}

std::string QuantizeReport::to_table() const {
  size_t width = 9;  // "converted"
  for (const LayerReport& l : layers) width = std::max(width, l.path.size());
  const int w = int(width);
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof(line), "%-*s  %-6s %14s %14s %10s %10s %9s %10s\n", w, "layer",
                "format", "bytes before", "bytes after", "bits/param", "rel err %", "SNR dB",
                "cosine");
  os << line;
  for (const LayerReport& l : layers) {
    std::snprintf(line, sizeof(line), "%-*s  %-6s %14lld %14lld %10.3f %10.4f %9.2f %10.6f\n", w,
                  l.path.c_str(), linear_format_name(l.format), (long long)l.before.bytes,
                  (long long)l.after.bytes, l.after.bits_per_param(), l.error.relative_percent,
                  l.error.snr_db, l.error.cosine);
    os << line;
  }
  const auto total = [&](const char* name, const ModelSize& b, const ModelSize& a) {
    std::snprintf(line, sizeof(line), "%-*s  %-6s %14lld %14lld %10.3f\n", w, name, "",
                  (long long)b.bytes, (long long)a.bytes, a.bits_per_param());
    os << line;
  };
  total("converted", quantized_before, quantized_after);
  total("model", before, after);
  std::snprintf(line, sizeof(line), "memory saved: %.1f%% of the model (%.3f -> %.3f bits/param)\n",
                100.0 * saved_fraction(), before.bits_per_param(), after.bits_per_param());
  os << line;
  return os.str();
}

QuantizeReport quantize_model(torch::nn::Module& model, const QuantizeConfig& config) {
  for (const auto& m : model.modules(/*include_self=*/true))
    TORCH_CHECK(!dynamic_cast<LoraLinearImpl*>(&layer_impl(*m)), "quantize_model: the model holds ",
                "LoRA adapters; quantize the base model before apply_lora");
  const PathPatterns include(config.include, "QuantizeConfig::include");
  const PathPatterns skip(config.modules_to_not_convert, "QuantizeConfig::modules_to_not_convert");
  std::vector<std::string> override_patterns;
  for (const FormatOverride& o : config.overrides) override_patterns.push_back(o.pattern);
  const PathPatterns overrides(override_patterns, "QuantizeConfig::overrides");
  QuantizeReport report;
  report.before = model_size(model);
  // Select and check everything first, so that a bad target changes nothing.
  // Targets are kept by path: check_replaceable counts the references to a
  // layer, so none may be held here while it runs.
  struct Target {
    std::string path;
    LinearFormat format;
  };
  std::vector<Target> targets;
  std::vector<std::string> linear_paths;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    if (!dynamic_cast<torch::nn::LinearImpl*>(&layer_impl(*item.value()))) continue;
    linear_paths.push_back(item.key());
    if (!include.matches(item.key()) || skip.matches(item.key())) continue;
    const int o = overrides.first_match(item.key());
    const LinearFormat format = o >= 0 ? config.overrides[size_t(o)].format : config.format;
    if (format != LinearFormat::None) targets.push_back({item.key(), format});
  }
  for (const Target& t : targets) {
    check_replaceable(model, t.path);
    const auto* linear = dynamic_cast<torch::nn::LinearImpl*>(
        &layer_impl(*find_submodule(model, t.path)));
    TORCH_CHECK(torch::isfinite(linear->weight).all().item<bool>(), "quantize_model: '", t.path,
                "' has inf or nan in its weight; quantization needs finite weights (nothing ",
                "was converted)");
  }
  if (config.strict) {
    check_all_match(include, linear_paths, "QuantizeConfig::include");
    check_all_match(skip, linear_paths, "QuantizeConfig::modules_to_not_convert");
    check_all_match(overrides, linear_paths, "QuantizeConfig::overrides");
  }
  TORCH_CHECK(!targets.empty(), "quantize_model: no torch::nn::Linear matches the include ",
              "patterns outside modules_to_not_convert with a format other than none; nothing ",
              "would be quantized");
  for (const Target& t : targets) {
    torch::nn::Linear linear(
        std::dynamic_pointer_cast<torch::nn::LinearImpl>(layer_impl(find_submodule(model, t.path))));
    LayerReport layer;
    layer.path = t.path;
    layer.format = t.format;
    layer.before = size_of(*linear);
    auto replacement = convert(linear, t.format, config);
    layer.error = quant::quantization_error(linear->weight, dequantized(*replacement));
    replace_submodule(model, t.path, replacement);
    // Release the full-precision weight now rather than when the last
    // handle goes, so that peak memory stays near one layer's.
    {
      torch::NoGradGuard no_grad;
      linear->weight.set_();
    }
    layer.after = size_of(*replacement);
    report.quantized_before.params += layer.before.params;
    report.quantized_before.bytes += layer.before.bytes;
    report.quantized_after.params += layer.after.params;
    report.quantized_after.bytes += layer.after.bytes;
    report.replaced.push_back(t.path);
    report.layers.push_back(std::move(layer));
  }
  report.after = model_size(model);
  return report;
}

}  // namespace lowbit::lora
