// InPlaceLayer: a module that stands for another one, its implementation
// (`impl`), and can be given a new implementation without being replaced.
// quantize_model, apply_lora and the loaders change such a layer in place, so
// a typed member that holds it (lowbit::nn::Linear) keeps calling the current
// form. It registers its implementation's parameters, buffers and children
// as its own, so module paths and state_dict names are those the
// implementation would have at the same place ("fc1.weight", "fc1.lora_A",
// "fc1.base_layer.weight"), and file formats do not change.
#pragma once

#include <memory>

#include <torch/nn/module.h>

namespace lowbit::lora {

class InPlaceLayer : public torch::nn::Module {
 public:
  // The current implementation (never null once constructed).
  const std::shared_ptr<torch::nn::Module>& impl() const { return impl_; }

  // Makes `impl` the implementation: this module's parameters, buffers and
  // children become exactly `impl`'s (the same tensors and modules, not
  // copies), and `impl` takes this module's training mode. The registry is
  // taken when the implementation is set: an implementation that later
  // registers new tensors must be set again.
  void set_impl(std::shared_ptr<torch::nn::Module> impl);

  // Sets the mode on the implementation too (it is not one of the children).
  void train(bool on = true) override;

 protected:
  explicit InPlaceLayer(std::string name) : torch::nn::Module(std::move(name)) {}

 private:
  std::shared_ptr<torch::nn::Module> impl_;
};

// The module that runs for `module`: an InPlaceLayer's implementation, or
// `module` itself for any other module.
std::shared_ptr<torch::nn::Module> layer_impl(const std::shared_ptr<torch::nn::Module>& module);
torch::nn::Module& layer_impl(torch::nn::Module& module);
const torch::nn::Module& layer_impl(const torch::nn::Module& module);

}  // namespace lowbit::lora
