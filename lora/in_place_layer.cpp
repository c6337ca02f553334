#include "lora/in_place_layer.h"

namespace lowbit::lora {

void InPlaceLayer::set_impl(std::shared_ptr<torch::nn::Module> impl) {
  TORCH_CHECK(impl, name(), ": the implementation is null");
  TORCH_CHECK(impl.get() != this && !dynamic_cast<InPlaceLayer*>(impl.get()), name(),
              ": the implementation must be a layer, not an InPlaceLayer");
  const bool training = is_training();
  // torch::nn::Module can register but not unregister parameters and
  // buffers; assigning a fresh base empties all three registries while this
  // object (which typed members and parents hold) stays the same.
  static_cast<torch::nn::Module&>(*this) = torch::nn::Module(name());
  for (const auto& p : impl->named_parameters(/*recurse=*/false))
    register_parameter(p.key(), p.value(), p.value().requires_grad());
  for (const auto& b : impl->named_buffers(/*recurse=*/false)) register_buffer(b.key(), b.value());
  for (const auto& c : impl->named_children()) register_module(c.key(), c.value());
  impl_ = std::move(impl);
  train(training);
}

void InPlaceLayer::train(bool on) {
  torch::nn::Module::train(on);
  if (impl_) impl_->train(on);
}

std::shared_ptr<torch::nn::Module> layer_impl(const std::shared_ptr<torch::nn::Module>& module) {
  if (auto* layer = dynamic_cast<InPlaceLayer*>(module.get())) return layer->impl();
  return module;
}

torch::nn::Module& layer_impl(torch::nn::Module& module) {
  if (auto* layer = dynamic_cast<InPlaceLayer*>(&module)) return *layer->impl();
  return module;
}

const torch::nn::Module& layer_impl(const torch::nn::Module& module) {
  if (auto* layer = dynamic_cast<const InPlaceLayer*>(&module)) return *layer->impl();
  return module;
}

}  // namespace lowbit::lora
