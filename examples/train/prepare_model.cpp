#include "examples/train/prepare_model.h"

#include <sstream>

namespace lowbit::train {

PreparedModel prepare_model(const std::shared_ptr<torch::nn::Module>& model,
                            const config::QuantRecipe& quant, const config::LoraRecipe& lora,
                            kernels::Backend& backend) {
  (void)backend;
  if (quant.enabled || lora.enabled) {
    throw config::RecipeError(std::string(quant.enabled ? "quant" : "lora") +
                              ": QLoRA needs the lora/ layer (issue 5), which this build does not "
                              "have yet; remove the quant and lora sections");
  }
  PreparedModel prepared;
  int64_t total = 0, trainable = 0;
  for (const torch::Tensor& p : model->parameters()) {
    total += p.numel();
    if (p.requires_grad()) {
      trainable += p.numel();
      prepared.trainable.push_back(p);
    }
  }
  std::ostringstream d;
  d << total << " parameters, " << trainable << " trainable";
  prepared.description = d.str();
  return prepared;
}

}  // namespace lowbit::train
