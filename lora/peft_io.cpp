#include "lora/peft_io.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <set>

#include <torch/nn/modules/linear.h>

#include "lora/in_place_layer.h"
#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "lora/module_paths.h"
#include "quant/atomic_file.h"
#include "quant/json_file.h"
#include "quant/safetensors.h"

namespace lowbit::lora {
namespace {

using nlohmann::json;

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

bool is_plain_name(const std::string& p) {
  return !p.empty() && std::all_of(p.begin(), p.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_';
  });
}

// PEFT reads a list as names matched exactly or as a dot-suffix of the path,
// and a string as one regex matched against the whole path. Plain names are
// written as a list; anything else as the one regex that means the same as
// PathPatterns' rule (whole path or a dot-suffix).
json target_modules_json(const std::vector<std::string>& patterns) {
  if (std::all_of(patterns.begin(), patterns.end(), is_plain_name)) return patterns;
  std::string re = "(?:.*\\.)?(?:";
  for (size_t i = 0; i < patterns.size(); ++i) re += (i ? "|" : "") + patterns[i];
  return re + ")";
}

std::string regex_escape(const std::string& s) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(s, special, R"(\$&)");
}

std::vector<std::string> target_modules_from_json(const json& v, const std::string& what) {
  if (v.is_string()) return {v.get<std::string>()};
  TORCH_CHECK(v.is_array() && !v.empty(), what, ": 'target_modules' must be a non-empty list of ",
              "module names or a regex string, got ", v.dump());
  std::vector<std::string> out;
  for (const json& e : v) {
    TORCH_CHECK(e.is_string(), what, ": 'target_modules' entries must be strings, got ", e.dump());
    out.push_back(regex_escape(e.get<std::string>()));
  }
  return out;
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

// PEFT writes lora_alpha as an int when it is one.
json number_json(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return int64_t(v);
  return v;
}

template <typename T>
T get_or(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  return (it == j.end() || it->is_null()) ? fallback : it->get<T>();
}

// Options PEFT may set that change what a LoRA layer computes or saves: only
// their neutral values (absent, null, false, empty) are accepted.
void refuse_unsupported(const json& j, const std::string& what) {
  for (const char* key : {"rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform",
                          "layers_pattern", "layer_replication"}) {
    auto it = j.find(key);
    const bool neutral = it == j.end() || it->is_null() || (it->is_object() && it->empty()) ||
                         (it->is_array() && it->empty());
    TORCH_CHECK(neutral, what, ": '", key, "' is ", it->dump(), "; this option is not supported");
  }
  for (const char* key : {"fan_in_fan_out", "use_dora"}) {
    auto it = j.find(key);
    TORCH_CHECK(it == j.end() || it->is_null() || (it->is_boolean() && !it->get<bool>()), what,
                ": '", key, "' is ", it->dump(), "; only false is supported");
  }
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
  json j = {
      {"peft_type", "LORA"},
      {"r", config.r},
      {"lora_alpha", number_json(config.lora_alpha)},
      {"lora_dropout", config.lora_dropout},
      {"target_modules", target_modules_json(config.target_modules)},
      {"bias", config.bias},
      {"use_rslora", config.use_rslora},
      {"fan_in_fan_out", false},
      {"task_type", config.task_type.empty() ? json(nullptr) : json(config.task_type)},
      {"base_model_name_or_path", config.base_model_name_or_path.empty()
                                      ? json(nullptr)
                                      : json(config.base_model_name_or_path)},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", json::object()},
      {"alpha_pattern", json::object()},
      {"use_dora", false},
      {"revision", nullptr},
  };
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  TORCH_CHECK(!ec, "save_adapter: cannot create directory '", dir, "': ", ec.message());
  quant::save_safetensors(in_dir(dir, kWeightsFile), tensors, {{"format", "pt"}});
  quant::write_file_atomically(in_dir(dir, kConfigFile), j.dump(2) + "\n");
}

LoraConfig load_adapter_config(const std::string& dir) {
  const std::string path = in_dir(dir, kConfigFile);
  const json j = quant::read_json_file(path);
  TORCH_CHECK(j.is_object(), path, ": expected a JSON object");
  LoraConfig c;
  try {
    const std::string type = get_or<std::string>(j, "peft_type", "");
    TORCH_CHECK(type == "LORA", path, ": peft_type is \"", type, "\"; expected \"LORA\"");
    TORCH_CHECK(j.contains("r") && j["r"].is_number_integer(), path,
                ": 'r' must be an integer, got ", j.contains("r") ? j["r"].dump() : "nothing");
    c.r = j["r"].get<int64_t>();
    TORCH_CHECK(j.contains("lora_alpha") && j["lora_alpha"].is_number(), path,
                ": 'lora_alpha' must be a number");
    c.lora_alpha = j["lora_alpha"].get<double>();
    c.lora_dropout = get_or<double>(j, "lora_dropout", 0.0);
    c.use_rslora = get_or<bool>(j, "use_rslora", false);
    c.bias = get_or<std::string>(j, "bias", "none");
    c.task_type = get_or<std::string>(j, "task_type", "");
    c.base_model_name_or_path = get_or<std::string>(j, "base_model_name_or_path", "");
    TORCH_CHECK(j.contains("target_modules"), path, ": 'target_modules' is missing");
    c.target_modules = target_modules_from_json(j["target_modules"], path);
  } catch (const json::exception& e) {
    TORCH_CHECK(false, path, ": a field has the wrong type: ", e.what());
  }
  refuse_unsupported(j, path);
  try {
    c.validate();
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, path, ": ", e.msg());
  }
  return c;
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
