#include "lora/quantized_model_io.h"

#include <functional>
#include <map>
#include <set>
#include <sstream>

#include <torch/nn/modules/linear.h>

#include "lora/lora_linear.h"
#include "lora/module_paths.h"
#include "quant/safetensors.h"

namespace lowbit::lora {
namespace {

// transformers + bitsandbytes name the quant state "<P>.weight.quant_state.bitsandbytes__<type>".
const std::string kQuantStateMarker = ".weight.quant_state.bitsandbytes__";

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// A module path as the file names it: without PEFT's "base_layer" hops.
std::string file_path(const std::string& module_path) {
  std::string out;
  std::stringstream parts(module_path);
  for (std::string part; std::getline(parts, part, '.');)
    if (part != "base_layer") out = join(out, part);
  return out;
}

// The model's tensors by their names in the file.
struct Layout {
  std::map<std::string, Linear4bitImpl*> quantized;      // file path -> layer
  std::map<std::string, torch::nn::LinearImpl*> linear;  // file path -> layer
  std::set<std::string> adapted;  // file paths of Linears inside a LoRA adapter (base_layer)
  std::map<std::string, torch::Tensor> tensors;          // file key -> plain parameter or buffer
};

Layout layout_of(torch::nn::Module& model) {
  Layout l;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    torch::nn::Module* m = item.value().get();
    if (dynamic_cast<LoraLinearImpl*>(m)) continue;  // its own tensors are the adapter's
    const std::string path = file_path(item.key());
    if (auto* q = dynamic_cast<Linear4bitImpl*>(m)) {
      l.quantized[path] = q;
      continue;  // its entries come from bnb_state_dict
    }
    if (auto* lin = dynamic_cast<torch::nn::LinearImpl*>(m)) {
      l.linear[path] = lin;
      if (path != item.key()) l.adapted.insert(path);
    }
    for (const auto& p : m->named_parameters(/*recurse=*/false)) l.tensors[join(path, p.key())] = p.value();
    for (const auto& b : m->named_buffers(/*recurse=*/false)) l.tensors[join(path, b.key())] = b.value();
  }
  return l;
}

}  // namespace

void save_quantized_model(torch::nn::Module& model, const std::string& path) {
  const Layout layout = layout_of(model);
  std::map<std::string, torch::Tensor> entries;
  for (const auto& [p, layer] : layout.quantized)
    for (auto& [key, t] : layer->bnb_state_dict(p.empty() ? "" : p + ".")) entries[key] = t;
  for (const auto& [key, t] : layout.tensors)
    if (t.defined()) entries[key] = t.detach();
  quant::save_safetensors(path, entries, {{"format", "pt"}});
}

void load_quantized_model(torch::nn::Module& model, const std::string& path,
                          const Linear4bitOptions& options) {
  const quant::SafetensorsFile file = quant::load_safetensors(path);
  Layout layout = layout_of(model);
  std::set<std::string> consumed;
  std::vector<std::function<void()>> actions;  // run only once everything checked out

  for (const auto& [key, tensor] : file.tensors) {
    const size_t marker = key.find(kQuantStateMarker);
    if (marker == std::string::npos) continue;
    const std::string p = key.substr(0, marker);
    const std::string prefix = p.empty() ? "" : p + ".";
    auto [packed, state] = quant::from_bnb_4bit(file.tensors, prefix, path);
    for (const char* suffix : {"weight", "weight.absmax", "weight.quant_map", "weight.nested_absmax",
                               "weight.nested_quant_map"})
      consumed.insert(prefix + suffix);
    consumed.insert(key);
    torch::Tensor bias;
    if (auto it = file.tensors.find(prefix + "bias"); it != file.tensors.end()) {
      bias = it->second;
      consumed.insert(it->first);
    }
    TORCH_CHECK(state.shape.size() == 2, path, ": '", key, "' describes a weight of shape ",
                torch::IntArrayRef(state.shape), "; a linear layer needs [out, in]");
    const std::vector<int64_t> shape = state.shape;
    if (auto it = layout.quantized.find(p); it != layout.quantized.end()) {
      Linear4bitImpl* layer = it->second;
      TORCH_CHECK(bool(layer->bias.defined()) == bool(bias.defined()), path, ": '", p,
                  "' has ", bias.defined() ? "a" : "no", " bias in the file but the model's ",
                  "layer has ", layer->bias.defined() ? "one" : "none");
      TORCH_CHECK(shape == layer->quant_state().shape &&
                      bool(state.nested) == bool(layer->quant_state().nested),
                  path, ": '", p, "' is a ", torch::IntArrayRef(shape),
                  state.nested ? " double-quantized" : "", " weight; the model's Linear4bit there ",
                  "differs in shape or double quantization; load into the unquantized model");
      // The file's tensors go where the layer is (a model already on a GPU).
      const torch::Device dev = layer->packed_weight().device();
      actions.push_back([layer, packed = packed.to(dev), state = state.to(dev), bias] {
        layer->set_quantized_weight(packed, state);
        torch::NoGradGuard no_grad;
        if (bias.defined()) layer->bias.copy_(bias);
      });
    } else if (auto lt = layout.linear.find(p); lt != layout.linear.end()) {
      torch::nn::LinearImpl* lin = lt->second;
      TORCH_CHECK(!layout.adapted.count(p), path, ": '", p, "' is the base of a LoRA adapter; ",
                  "load the quantized model before apply_lora");
      const std::string& module_path = p;  // outside adapters, the file path is the model's
      const std::vector<int64_t> linear_shape = {lin->options.out_features(),
                                                 lin->options.in_features()};
      TORCH_CHECK(shape == linear_shape, path, ": '", p, "' holds a weight of shape ", torch::IntArrayRef(shape),
                  "; the model's Linear there is [", lin->options.out_features(), ", ",
                  lin->options.in_features(), "]");
      TORCH_CHECK(lin->bias.defined() == bias.defined(), path, ": '", p, "' has ",
                  bias.defined() ? "a" : "no", " bias in the file but the model's Linear has ",
                  lin->bias.defined() ? "one" : "none");
      check_replaceable(model, module_path);
      const auto bias_dtype = lin->bias.defined() ? lin->bias.scalar_type() : torch::kFloat32;
      if (lin->bias.defined()) layout.tensors.erase(join(p, "bias"));
      layout.tensors.erase(join(p, "weight"));
      const torch::Device dev = lin->weight.device();
      actions.push_back([&model, module_path, packed = packed.to(dev), state = state.to(dev), bias,
                         bias_dtype, dev, options] {
        const torch::Tensor b = bias.defined() ? bias.to(dev, bias_dtype) : bias;
        replace_submodule(model, module_path,
                          std::make_shared<Linear4bitImpl>(packed, state, b, options));
      });
    } else {
      TORCH_CHECK(false, path, ": '", key, "' quantizes a layer '", p,
                  "', but the model has no Linear or Linear4bit there");
    }
  }

  for (const auto& [key, tensor] : file.tensors) {
    if (consumed.count(key)) continue;
    auto it = layout.tensors.find(key);
    TORCH_CHECK(it != layout.tensors.end(), path, ": tensor '", key,
                "' matches no parameter or buffer of the model");
    TORCH_CHECK(it->second.sizes() == tensor.sizes(), path, ": tensor '", key, "' has shape ",
                tensor.sizes(), "; the model's is ", it->second.sizes());
    actions.push_back([target = it->second, tensor] {
      torch::NoGradGuard no_grad;
      torch::Tensor t = target;
      t.copy_(tensor);
    });
    consumed.insert(key);
  }
  for (const auto& [key, tensor] : layout.tensors)
    TORCH_CHECK(!tensor.defined() || file.tensors.count(key), path, ": the model's tensor '", key,
                "' is not in the file");
  for (auto& action : actions) action();
}

}  // namespace lowbit::lora
