#include "lora/apply_lora.h"

#include <cmath>

#include <torch/nn/modules/linear.h>

#include "lora/in_place_layer.h"
#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "lora/module_paths.h"

namespace lowbit::lora {

LoraOptions LoraConfig::layer_options() const {
  return LoraOptions()
      .r(r)
      .alpha(lora_alpha)
      .dropout(lora_dropout)
      .use_rslora(use_rslora)
      .dtype(dtype)
      .compute_dtype(compute_dtype);
}

void LoraConfig::validate() const {
  TORCH_CHECK(r >= 1, "LoraConfig: r must be at least 1, got ", r);
  TORCH_CHECK(lora_alpha > 0.0 && std::isfinite(lora_alpha),
              "LoraConfig: lora_alpha must be a positive number, got ", lora_alpha);
  TORCH_CHECK(lora_dropout >= 0.0 && lora_dropout < 1.0,
              "LoraConfig: lora_dropout must be in [0, 1), got ", lora_dropout);
  TORCH_CHECK(!target_modules.empty(), "LoraConfig: target_modules is empty; name the layers ",
              "to adapt (e.g. \"qkv\", \"fc1\")");
  TORCH_CHECK(bias == "none", "LoraConfig: bias \"", bias,
              "\" is not supported; expected \"none\" (biases stay frozen)");
}

std::vector<std::pair<std::string, LoraLinear>> lora_layers(torch::nn::Module& model) {
  std::vector<std::pair<std::string, LoraLinear>> out;
  for (const auto& item : model.named_modules("", /*include_self=*/false))
    if (auto lora = std::dynamic_pointer_cast<LoraLinearImpl>(layer_impl(item.value())))
      out.emplace_back(item.key(), LoraLinear(lora));
  return out;
}

std::vector<torch::Tensor> apply_lora(torch::nn::Module& model, const LoraConfig& config) {
  config.validate();
  const PathPatterns targets(config.target_modules, "LoraConfig::target_modules");
  TORCH_CHECK(lora_layers(model).empty(), "apply_lora: the model already holds LoRA adapters ",
              "(one adapter per model is supported)");
  // Paths only while check_replaceable runs: it counts the references to each layer.
  std::vector<std::string> selected;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    torch::nn::Module& m = layer_impl(*item.value());
    const bool linear_like = dynamic_cast<Linear4bitImpl*>(&m) != nullptr ||
                             dynamic_cast<Linear8bitImpl*>(&m) != nullptr ||
                             dynamic_cast<torch::nn::LinearImpl*>(&m) != nullptr;
    if (linear_like && targets.matches(item.key())) selected.push_back(item.key());
  }
  TORCH_CHECK(!selected.empty(), "apply_lora: target_modules matched no Linear4bit, ",
              "Linear8bit or torch::nn::Linear layer of the model");
  for (const std::string& path : selected) check_replaceable(model, path);
  std::vector<std::shared_ptr<LoraLinearImpl>> adapters;
  for (const std::string& path : selected)
    adapters.push_back(std::make_shared<LoraLinearImpl>(layer_impl(find_submodule(model, path)),
                                                        config.layer_options()));
  // Nothing has changed so far; from here on nothing can fail.
  for (auto& p : model.parameters()) p.set_requires_grad(false);
  std::vector<torch::Tensor> trainable;
  for (size_t i = 0; i < selected.size(); ++i) {
    replace_submodule(model, selected[i], adapters[i]);
    trainable.push_back(adapters[i]->lora_A);
    trainable.push_back(adapters[i]->lora_B);
  }
  return trainable;
}

}  // namespace lowbit::lora
