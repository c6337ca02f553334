#include "lora/peft_io.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <torch/nn/modules/linear.h>

#include "lora/adapter_config.h"
#include "lora/in_place_layer.h"
#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "lora/module_paths.h"
#include "quant/atomic_file.h"
#include "quant/json_file.h"
#include "quant/safetensors.h"

namespace lowbit::lora {
namespace {

// PEFT's names (peft/utils/save_and_load.py, peft/utils/constants.py).
constexpr const char* kKeyPrefix = "base_model.model.";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr const char* kConfigFile = "adapter_config.json";
const std::string kSuffixA = ".lora_A.weight";
const std::string kSuffixB = ".lora_B.weight";

std::string in_dir(const std::string& dir, const char* file) {
  return (std::filesystem::path(dir) / file).string();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string describe_dtype(torch::ScalarType t) { return c10::toString(t); }

// The adapters' (A, B) per module path in an adapter file.
struct AdapterPair {
  torch::Tensor a, b;
};

std::map<std::string, AdapterPair> read_adapter_tensors(const std::string& dir) {
  const std::string path = in_dir(dir, kWeightsFile);
  const quant::SafetensorsFile file = quant::load_safetensors(path);
  const std::string prefix = kKeyPrefix;
  std::map<std::string, AdapterPair> out;
  for (const auto& [key, tensor] : file.tensors) {
    const bool is_a = ends_with(key, kSuffixA), is_b = ends_with(key, kSuffixB);
    TORCH_CHECK(key.rfind(prefix, 0) == 0 && (is_a || is_b), path, ": unexpected tensor '", key,
                "'; a LoRA adapter holds only '", prefix, "<module>", kSuffixA, "' and '",
                kSuffixB, "' (PEFT options that save other tensors are not supported)");
    const std::string module =
        key.substr(prefix.size(), key.size() - prefix.size() - (is_a ? kSuffixA : kSuffixB).size());
    TORCH_CHECK(!module.empty(), path, ": tensor '", key, "' names no module");
    const auto t = tensor.scalar_type();
    TORCH_CHECK(t == torch::kFloat16 || t == torch::kBFloat16 || t == torch::kFloat32, path,
                ": tensor '", key, "' has dtype ", describe_dtype(t),
                "; expected float16, bfloat16 or float32");
    TORCH_CHECK(tensor.dim() == 2, path, ": tensor '", key, "' has shape ", tensor.sizes(),
                "; expected a matrix");
    (is_a ? out[module].a : out[module].b) = tensor;
  }
  for (const auto& [module, pair] : out)
    TORCH_CHECK(pair.a.defined() && pair.b.defined(), path, ": module '", module, "' has only ",
                pair.a.defined() ? "lora_A" : "lora_B", "; both lora_A and lora_B are needed");
  TORCH_CHECK(!out.empty(), path, ": the file holds no LoRA tensors");
  return out;
}

// Throws unless the pair fits a layer [out, in] at rank r.
void check_pair(const std::string& dir, const std::string& module, const AdapterPair& p, int64_t r,
                int64_t in, int64_t out) {
  const std::string what = in_dir(dir, kWeightsFile) + ": module '" + module + "'";
  TORCH_CHECK(p.a.size(0) == r && p.b.size(1) == r, what, ": rank mismatch: lora_A is ",
              p.a.sizes(), " and lora_B is ", p.b.sizes(), " but the adapter rank r is ", r);
  TORCH_CHECK(p.a.size(1) == in, what, ": lora_A is ", p.a.sizes(), " but the layer has ", in,
              " input features (expected [", r, ", ", in, "])");
  TORCH_CHECK(p.b.size(0) == out, what, ": lora_B is ", p.b.sizes(), " but the layer has ", out,
              " output features (expected [", out, ", ", r, "])");
}

// in/out features of a layer LoRA can wrap, or nullopt for any other module.
std::optional<std::pair<int64_t, int64_t>> linear_shape(torch::nn::Module& module) {
  torch::nn::Module& m = layer_impl(module);
  if (auto* q = dynamic_cast<Linear4bitImpl*>(&m)) return std::make_pair(q->in_features(), q->out_features());
  if (auto* q8 = dynamic_cast<Linear8bitImpl*>(&m))
    return std::make_pair(q8->in_features(), q8->out_features());
  if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(&m))
    return std::make_pair(l->options.in_features(), l->options.out_features());
  return std::nullopt;
}

void copy_into(const AdapterPair& p, const LoraLinearImpl& layer) {
  torch::NoGradGuard no_grad;
  torch::Tensor a = layer.lora_A, b = layer.lora_B;
  a.copy_(p.a);
  b.copy_(p.b);
}

}  // namespace

LoraConfig adapter_config(torch::nn::Module& model) {
  const auto layers = lora_layers(model);
  TORCH_CHECK(!layers.empty(), "adapter_config: the model holds no LoRA adapters");
  const auto& [first_path, first] = layers.front();
  const LoraOptions& o = first->options();
  LoraConfig c;
  c.r = o.r();
  c.lora_alpha = o.alpha();
  c.lora_dropout = o.dropout();
  c.use_rslora = o.use_rslora();
  c.dtype = o.dtype();
  c.compute_dtype = o.compute_dtype();
  std::set<std::string> adapted, names;
  for (const auto& [path, layer] : layers) {
    const LoraOptions& l = layer->options();
    TORCH_CHECK(l.r() == o.r() && l.alpha() == o.alpha() && l.dropout() == o.dropout() &&
                    l.use_rslora() == o.use_rslora(),
                "adapter_config: layer '", path, "' has r=", l.r(), ", alpha=", l.alpha(),
                ", dropout=", l.dropout(), ", use_rslora=", l.use_rslora(), " but '", first_path,
                "' has r=", o.r(), ", alpha=", o.alpha(), ", dropout=", o.dropout(),
                ", use_rslora=", o.use_rslora(),
                "; one setting for every layer is supported (no rank_pattern / alpha_pattern)");
    adapted.insert(path);
    const size_t dot = path.rfind('.');
    names.insert(dot == std::string::npos ? path : path.substr(dot + 1));
  }
  // The last components select exactly the adapted layers unless another
  // linear layer (outside the adapters) shares one of those names.
  const std::vector<std::string> by_name(names.begin(), names.end());
  const PathPatterns name_patterns(by_name, "adapter_config");
  bool exact = true;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const std::string& path = item.key();
    const bool in_adapter = ("." + path + ".").find(".base_layer.") != std::string::npos;
    if (in_adapter || adapted.count(path) || !linear_shape(*item.value())) continue;
    if (name_patterns.matches(path)) exact = false;
  }
  if (exact) {
    c.target_modules = by_name;
  } else {
    for (const std::string& path : adapted) c.target_modules.push_back(regex_escape(path));
  }
  return c;
}

void save_adapter(torch::nn::Module& model, const std::string& dir) {
  save_adapter(model, dir, adapter_config(model));
}

void save_adapter(torch::nn::Module& model, const std::string& dir, const LoraConfig& config) {
  config.validate();
  const auto layers = lora_layers(model);
  TORCH_CHECK(!layers.empty(), "save_adapter: the model holds no LoRA adapters");
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [path, layer] : layers) {
    const LoraOptions& o = layer->options();
    TORCH_CHECK(o.r() == config.r && o.alpha() == config.lora_alpha &&
                    o.use_rslora() == config.use_rslora,
                "save_adapter: layer '", path, "' has r=", o.r(), ", alpha=", o.alpha(),
                ", use_rslora=", o.use_rslora(), " but the config says r=", config.r,
                ", lora_alpha=", config.lora_alpha, ", use_rslora=", config.use_rslora);
    TORCH_CHECK(!layer->merged(), "save_adapter: layer '", path,
                "' is merged into its base; unmerge() before saving the adapter");
    tensors[kKeyPrefix + path + kSuffixA] = layer->lora_A.detach();
    tensors[kKeyPrefix + path + kSuffixB] = layer->lora_B.detach();
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  TORCH_CHECK(!ec, "save_adapter: cannot create directory '", dir, "': ", ec.message());
  quant::save_safetensors(in_dir(dir, kWeightsFile), tensors, {{"format", "pt"}});
  quant::write_file_atomically(in_dir(dir, kConfigFile),
                               adapter_config_to_json(config).dump(2) + "\n");
}

LoraConfig load_adapter_config(const std::string& dir) {
  const std::string path = in_dir(dir, kConfigFile);
  const LoraConfig config = adapter_config_from_json(quant::read_json_file(path), path);
  try {
    config.validate();
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, path, ": ", e.msg());
  }
  return config;
}

std::vector<torch::Tensor> load_adapter(torch::nn::Module& model, const std::string& dir) {
  LoraConfig config = load_adapter_config(dir);
  const auto pairs = read_adapter_tensors(dir);
  const std::string weights = in_dir(dir, kWeightsFile);
  TORCH_CHECK(lora_layers(model).empty(), "load_adapter: the model already holds LoRA adapters; ",
              "use load_adapter_weights to load into them");
  // The layers the file holds must be exactly those its config selects.
  const PathPatterns targets(config.target_modules, in_dir(dir, kConfigFile) + " target_modules");
  for (const auto& [module, pair] : pairs) {
    std::shared_ptr<torch::nn::Module> m;
    try {
      m = find_submodule(model, module);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, weights, ": unknown module '", module, "' (", e.msg(), ")");
    }
    const auto shape = linear_shape(*m);
    TORCH_CHECK(shape, weights, ": module '", module, "' is a ", m->name(),
                ", not a Linear4bit or torch::nn::Linear");
    check_pair(dir, module, pair, config.r, shape->first, shape->second);
    TORCH_CHECK(targets.matches(module), weights, ": module '", module,
                "' is not selected by the config's target_modules");
  }
  for (const auto& item : model.named_modules("", /*include_self=*/false))
    TORCH_CHECK(!linear_shape(*item.value()) || !targets.matches(item.key()) ||
                    pairs.count(item.key()),
                weights, ": the config's target_modules select '", item.key(),
                "' but the file has no weights for it");
  std::set<torch::ScalarType> dtypes;
  for (const auto& [module, pair] : pairs) {
    dtypes.insert(pair.a.scalar_type());
    dtypes.insert(pair.b.scalar_type());
  }
  TORCH_CHECK(dtypes.size() == 1, weights, ": the adapter tensors mix dtypes; expected one");
  config.dtype = *dtypes.begin();
  auto trainable = apply_lora(model, config);
  for (auto& [path, layer] : lora_layers(model)) copy_into(pairs.at(path), *layer);
  return trainable;
}

void load_adapter_weights(torch::nn::Module& model, const std::string& dir) {
  const LoraConfig config = load_adapter_config(dir);
  const auto pairs = read_adapter_tensors(dir);
  const std::string weights = in_dir(dir, kWeightsFile);
  const auto layers = lora_layers(model);
  TORCH_CHECK(!layers.empty(), "load_adapter_weights: the model holds no LoRA adapters; ",
              "use load_adapter to create them from the file");
  std::set<std::string> model_paths;
  for (const auto& [path, layer] : layers) {
    model_paths.insert(path);
    const LoraOptions& o = layer->options();
    TORCH_CHECK(o.alpha() == config.lora_alpha && o.use_rslora() == config.use_rslora,
                in_dir(dir, kConfigFile), ": lora_alpha=", config.lora_alpha,
                ", use_rslora=", config.use_rslora, " but the model's layer '", path,
                "' uses alpha=", o.alpha(), ", use_rslora=", o.use_rslora());
    auto it = pairs.find(path);
    TORCH_CHECK(it != pairs.end(), weights, ": no weights for the model's adapter '", path, "'");
    check_pair(dir, path, it->second, o.r(), layer->in_features(), layer->out_features());
  }
  for (const auto& [module, pair] : pairs)
    TORCH_CHECK(model_paths.count(module), weights, ": unknown module '", module,
                "': the model has no LoRA adapter there");
  for (const auto& [path, layer] : layers) copy_into(pairs.at(path), *layer);
}

}  // namespace lowbit::lora
