#include "lora/quantize_model.h"

#include <iomanip>
#include <set>
#include <sstream>

#include "lora/lora_linear.h"
#include "lora/module_paths.h"

namespace lowbit::lora {
namespace {

int64_t bytes_of(const torch::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

// Adds a module's own parameters and buffers (not its children's), counting
// a tensor shared by several modules once.
void add_module(torch::nn::Module& m, std::set<const void*>& seen, ModelSize& size) {
  if (auto* q = dynamic_cast<Linear4bitImpl*>(&m)) {
    // The codes and scales are its buffers; count them as out*in parameters.
    const quant::StorageReport s = q->storage();
    size.params += s.params;
    size.bytes += s.total_bytes();
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

std::string describe(const ModelSize& s) {
  std::ostringstream os;
  os << s.params << " params, " << s.bytes << " bytes (" << std::fixed << std::setprecision(3)
     << s.bits_per_param() << " bits/param)";
  return os.str();
}

}  // namespace

ModelSize model_size(torch::nn::Module& model) {
  ModelSize size;
  std::set<const void*> seen;
  for (const auto& m : model.modules(/*include_self=*/true)) add_module(*m, seen, size);
  return size;
}

std::string QuantizeReport::to_string() const {
  std::ostringstream os;
  os << "quantized " << replaced.size() << " linear layers: " << describe(quantized_before)
     << " -> " << describe(quantized_after) << "; model: " << describe(before) << " -> "
     << describe(after);
  return os.str();
}

QuantizeReport quantize_model(torch::nn::Module& model, const QuantizeConfig& config) {
  for (const auto& m : model.modules(/*include_self=*/true))
    TORCH_CHECK(!dynamic_cast<LoraLinearImpl*>(m.get()), "quantize_model: the model holds LoRA ",
                "adapters; quantize the base model before apply_lora");
  const PathPatterns include(config.include, "QuantizeConfig::include");
  const PathPatterns skip(config.skip, "QuantizeConfig::skip");
  QuantizeReport report;
  report.before = model_size(model);
  // Select and check everything first, so that a bad target changes nothing.
  std::vector<std::pair<std::string, torch::nn::Linear>> targets;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto* linear = dynamic_cast<torch::nn::LinearImpl*>(item.value().get());
    if (!linear || !include.matches(item.key()) || skip.matches(item.key())) continue;
    check_replaceable(model, item.key());
    targets.emplace_back(item.key(),
                         torch::nn::Linear(std::dynamic_pointer_cast<torch::nn::LinearImpl>(item.value())));
  }
  TORCH_CHECK(!targets.empty(), "quantize_model: no torch::nn::Linear matches the include ",
              "patterns outside the skip patterns; nothing would be quantized");
  for (auto& [path, linear] : targets) {
    std::set<const void*> seen;
    add_module(*linear, seen, report.quantized_before);
    auto replacement = std::make_shared<Linear4bitImpl>(linear, config.linear);
    replace_submodule(model, path, replacement);
    // Release the full-precision weight in place (every handle to it, such as
    // a stale typed member of the parent, sees an empty tensor and fails).
    {
      torch::NoGradGuard no_grad;
      linear->weight.set_();
    }
    seen.clear();
    add_module(*replacement, seen, report.quantized_after);
    report.replaced.push_back(path);
  }
  report.after = model_size(model);
  return report;
}

}  // namespace lowbit::lora
