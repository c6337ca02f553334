#include "lora/quantized_model_io.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/nn/modules/linear.h>

#include "lora/in_place_layer.h"
#include "lora/lora_linear.h"
#include "lora/module_paths.h"
#include "lora/quantize_model.h"
#include "quant/safetensors.h"

namespace lowbit::lora {
namespace {

// transformers + bitsandbytes name the quant state "<P>.weight.quant_state.bitsandbytes__<type>".
const std::string kQuantStateMarker = ".weight.quant_state.bitsandbytes__";
// The safetensors metadata entry recording each quantized layer's format (and
// an int8 layer's threshold, which bitsandbytes' tensors do not hold).
const char* const kLayersKey = "lowbit.quantized_layers";

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::string prefix_of(const std::string& path) { return path.empty() ? "" : path + "."; }

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
  std::map<std::string, Linear4bitImpl*> four_bit;       // file path -> layer
  std::map<std::string, Linear8bitImpl*> int8;           // file path -> layer
  std::map<std::string, torch::nn::LinearImpl*> linear;  // file path -> layer
  std::set<std::string> adapted;  // file paths of Linears inside a LoRA adapter (base_layer)
  std::map<std::string, torch::Tensor> tensors;          // file key -> plain parameter or buffer
};

Layout layout_of(torch::nn::Module& model) {
  Layout l;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    torch::nn::Module* m = &layer_impl(*item.value());
    if (dynamic_cast<LoraLinearImpl*>(m)) continue;  // its own tensors are the adapter's
    const std::string path = file_path(item.key());
    // A quantized layer's entries come from bnb_state_dict.
    if (auto* q = dynamic_cast<Linear4bitImpl*>(m)) {
      l.four_bit[path] = q;
      continue;
    }
    if (auto* q8 = dynamic_cast<Linear8bitImpl*>(m)) {
      l.int8[path] = q8;
      continue;
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

// One quantized layer of a file: 4-bit (packed, state) or int8 (codes, scb).
struct FileLayer {
  std::string path;
  LinearFormat format = LinearFormat::NF4;
  std::vector<int64_t> shape;  // [out, in]
  torch::Tensor bias;          // undefined when the file has none
  torch::Tensor packed;
  quant::QuantState state;
  torch::Tensor codes, scb;
  double threshold = 0.0;  // int8: from the file's metadata, else the load options'
};

// The quantized layers of a file (their keys added to `consumed`).
std::vector<FileLayer> file_layers(const quant::SafetensorsFile& file, const std::string& path,
                                   double default_threshold, std::set<std::string>& consumed) {
  std::vector<FileLayer> layers;
  for (const auto& [key, tensor] : file.tensors) {
    FileLayer f;
    const size_t marker = key.find(kQuantStateMarker);
    if (marker != std::string::npos) {
      f.path = key.substr(0, marker);
      std::tie(f.packed, f.state) = quant::from_bnb_4bit(file.tensors, prefix_of(f.path), path);
      f.format = f.state.format == quant::Format::FP4 ? LinearFormat::FP4 : LinearFormat::NF4;
      f.shape = f.state.shape;
      for (const char* suffix : {"weight", "weight.absmax", "weight.quant_map",
                                 "weight.nested_absmax", "weight.nested_quant_map"})
        consumed.insert(prefix_of(f.path) + suffix);
      consumed.insert(key);
    } else if (key == "SCB" || (key.size() > 4 && key.compare(key.size() - 4, 4, ".SCB") == 0)) {
      f.path = key == "SCB" ? "" : key.substr(0, key.size() - 4);
      std::tie(f.codes, f.scb) = quant::from_bnb_int8(file.tensors, prefix_of(f.path), path);
      f.format = LinearFormat::Int8;
      f.shape = f.codes.sizes().vec();
      f.threshold = default_threshold;
      for (const char* suffix : {"weight", "SCB", "weight_format"})
        consumed.insert(prefix_of(f.path) + suffix);
    } else {
      continue;
    }
    TORCH_CHECK(f.shape.size() == 2, path, ": '", key, "' describes a weight of shape ",
                torch::IntArrayRef(f.shape), "; a linear layer needs [out, in]");
    if (auto it = file.tensors.find(prefix_of(f.path) + "bias"); it != file.tensors.end()) {
      f.bias = it->second;
      consumed.insert(it->first);
    }
    layers.push_back(std::move(f));
  }
  return layers;
}

// Checks the file's record of formats against its tensors and takes the
// int8 thresholds from it. Files without the record (bitsandbytes') pass.
void apply_metadata(const quant::SafetensorsFile& file, const std::string& path,
                    std::vector<FileLayer>& layers) {
  auto it = file.metadata.find(kLayersKey);
  if (it == file.metadata.end()) return;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, path, ": metadata '", kLayersKey, "' is not valid JSON: ", e.what());
  }
  TORCH_CHECK(j.is_object(), path, ": metadata '", kLayersKey, "' must be a JSON object");
  for (const auto& [layer_path, record] : j.items()) {
    TORCH_CHECK(record.is_object() && record.contains("format") && record["format"].is_string(),
                path, ": metadata for layer '", layer_path, "' needs a \"format\" string");
    const std::string name = record["format"].get<std::string>();
    LinearFormat format = LinearFormat::None;
    try {
      format = parse_linear_format(name);
    } catch (const c10::Error&) {
      TORCH_CHECK(false, path, ": layer '", layer_path, "' has format '", name,
                  "', which this version does not know; expected nf4, fp4 or int8");
    }
    // A plain copy to capture (C++17 lambdas cannot capture a structured
    // binding; GCC allows it as an extension, clang refuses it).
    const std::string& wanted = layer_path;
    auto f = std::find_if(layers.begin(), layers.end(),
                          [&](const FileLayer& l) { return l.path == wanted; });
    TORCH_CHECK(f != layers.end(), path, ": metadata lists layer '", layer_path, "' as ", name,
                ", but the file holds no quantized weight for it");
    TORCH_CHECK(f->format == format, path, ": metadata lists layer '", layer_path, "' as ", name,
                ", but its tensors are ", linear_format_name(f->format));
    if (format == LinearFormat::Int8 && record.contains("threshold")) {
      TORCH_CHECK(record["threshold"].is_number() && record["threshold"].get<double>() >= 0.0,
                  path, ": layer '", layer_path, "' has threshold ", record["threshold"].dump(),
                  "; expected a number >= 0");
      f->threshold = record["threshold"].get<double>();
    }
  }
}

}  // namespace

void save_quantized_model(torch::nn::Module& model, const std::string& path) {
  const Layout layout = layout_of(model);
  std::map<std::string, torch::Tensor> entries;
  nlohmann::json formats = nlohmann::json::object();
  for (const auto& [p, layer] : layout.four_bit) {
    for (auto& [key, t] : layer->bnb_state_dict(prefix_of(p))) entries[key] = t;
    formats[p] = {{"format", quant::format_info(layer->quant_state().format).name}};
  }
  for (const auto& [p, layer] : layout.int8) {
    for (auto& [key, t] : layer->bnb_state_dict(prefix_of(p))) entries[key] = t;
    formats[p] = {{"format", "int8"}, {"threshold", layer->options().threshold()}};
  }
  for (const auto& [key, t] : layout.tensors)
    if (t.defined()) entries[key] = t.detach();
  quant::save_safetensors(path, entries, {{"format", "pt"}, {kLayersKey, formats.dump()}});
}

void load_quantized_model(torch::nn::Module& model, const std::string& path,
                          const Linear4bitOptions& options, const Linear8bitOptions& int8_options) {
  const quant::SafetensorsFile file = quant::load_safetensors(path);
  Layout layout = layout_of(model);
  std::set<std::string> consumed;
  std::vector<std::function<void()>> actions;  // run only once everything checked out
  std::vector<FileLayer> layers = file_layers(file, path, int8_options.threshold(), consumed);
  apply_metadata(file, path, layers);

  for (FileLayer& f : layers) {
    const std::string& p = f.path;
    const bool is_int8 = f.format == LinearFormat::Int8;
    auto q4_it = layout.four_bit.find(p);
    auto q8_it = layout.int8.find(p);
    Linear4bitImpl* q4 = q4_it == layout.four_bit.end() ? nullptr : q4_it->second;
    Linear8bitImpl* q8 = q8_it == layout.int8.end() ? nullptr : q8_it->second;
    if (q4 || q8) {
      TORCH_CHECK(is_int8 ? q8 != nullptr : q4 != nullptr, path, ": '", p, "' is ",
                  linear_format_name(f.format), " in the file but the model's layer there is a ",
                  q8 ? "Linear8bit" : "Linear4bit", "; load into the unquantized model");
      torch::Tensor* bias = q4 ? &q4->bias : &q8->bias;
      TORCH_CHECK(bias->defined() == f.bias.defined(), path, ": '", p, "' has ",
                  f.bias.defined() ? "a" : "no", " bias in the file but the model's ",
                  "layer has ", bias->defined() ? "one" : "none");
      // The file's tensors go where the layer is (a model already on a GPU).
      if (q4) {
        TORCH_CHECK(f.shape == q4->quant_state().shape &&
                        bool(f.state.nested) == bool(q4->quant_state().nested),
                    path, ": '", p, "' is a ", torch::IntArrayRef(f.shape),
                    f.state.nested ? " double-quantized" : "", " weight; the model's Linear4bit ",
                    "there differs in shape or double quantization; load into the unquantized model");
        const torch::Device dev = q4->packed_weight().device();
        actions.push_back([q4, packed = f.packed.to(dev), state = f.state.to(dev)] {
          q4->set_quantized_weight(packed, state);
        });
      } else {
        TORCH_CHECK(f.shape == q8->int8_weight().sizes().vec(), path, ": '", p, "' is a ",
                    torch::IntArrayRef(f.shape), " int8 weight; the model's Linear8bit there is ",
                    q8->int8_weight().sizes());
        const torch::Device dev = q8->int8_weight().device();
        actions.push_back([q8, codes = f.codes.to(dev), scb = f.scb.to(dev)] {
          q8->set_quantized_weight(codes, scb);
        });
      }
      actions.push_back([bias, file_bias = f.bias] {
        torch::NoGradGuard no_grad;
        if (file_bias.defined()) bias->copy_(file_bias);
      });
    } else if (auto lt = layout.linear.find(p); lt != layout.linear.end()) {
      torch::nn::LinearImpl* lin = lt->second;
      TORCH_CHECK(!layout.adapted.count(p), path, ": '", p, "' is the base of a LoRA adapter; ",
                  "load the quantized model before apply_lora");
      const std::string& module_path = p;  // outside adapters, the file path is the model's
      const std::vector<int64_t> linear_shape = {lin->options.out_features(),
                                                 lin->options.in_features()};
      TORCH_CHECK(f.shape == linear_shape, path, ": '", p, "' holds a weight of shape ",
                  torch::IntArrayRef(f.shape), "; the model's Linear there is [",
                  lin->options.out_features(), ", ", lin->options.in_features(), "]");
      TORCH_CHECK(lin->bias.defined() == f.bias.defined(), path, ": '", p, "' has ",
                  f.bias.defined() ? "a" : "no", " bias in the file but the model's Linear has ",
                  lin->bias.defined() ? "one" : "none");
      check_replaceable(model, module_path);
      const auto bias_dtype = lin->bias.defined() ? lin->bias.scalar_type() : torch::kFloat32;
      if (lin->bias.defined()) layout.tensors.erase(join(p, "bias"));
      layout.tensors.erase(join(p, "weight"));
      const torch::Device dev = lin->weight.device();
      const torch::Tensor b = f.bias.defined() ? f.bias.to(dev, bias_dtype) : f.bias;
      std::function<std::shared_ptr<torch::nn::Module>()> make;
      if (is_int8) {
        make = [codes = f.codes.to(dev), scb = f.scb.to(dev), b,
                o = Linear8bitOptions(int8_options).threshold(f.threshold)] {
          return std::make_shared<Linear8bitImpl>(codes, scb, b, o);
        };
      } else {
        make = [packed = f.packed.to(dev), state = f.state.to(dev), b, options] {
          return std::make_shared<Linear4bitImpl>(packed, state, b, options);
        };
      }
      actions.push_back([&model, module_path, make] { replace_submodule(model, module_path, make()); });
    } else {
      TORCH_CHECK(false, path, ": the file quantizes a layer '", p,
                  "', but the model has no Linear, Linear4bit or Linear8bit there");
    }
  }

  for (const auto& [key, tensor] : file.tensors) {
    if (consumed.count(key)) continue;
    auto it = layout.tensors.find(key);
    TORCH_CHECK(it != layout.tensors.end(), path, ": tensor '", key,
                "' matches no parameter or buffer of the model");
    TORCH_CHECK(it->second.sizes() == tensor.sizes(), path, ": tensor '", key, "' has shape ",
                tensor.sizes(), "; the model's is ", it->second.sizes());
    actions.push_back([target = it->second, stored = tensor] {
      torch::NoGradGuard no_grad;
      torch::Tensor t = target;
      t.copy_(stored);
    });
    consumed.insert(key);
  }
  for (const auto& [key, tensor] : layout.tensors)
    TORCH_CHECK(!tensor.defined() || file.tensors.count(key), path, ": the model's tensor '", key,
                "' is not in the file");
  for (auto& action : actions) action();
}

}  // namespace lowbit::lora
