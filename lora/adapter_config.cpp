#include "lora/adapter_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

namespace lowbit::lora {
namespace {

using nlohmann::json;

bool is_plain_name(const std::string& p) {
  return !p.empty() && std::all_of(p.begin(), p.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_';
  });
}

json target_modules_json(const std::vector<std::string>& patterns) {
  if (std::all_of(patterns.begin(), patterns.end(), is_plain_name)) return patterns;
  std::string re = "(?:.*\\.)?(?:";
  for (size_t i = 0; i < patterns.size(); ++i) re += (i ? "|" : "") + patterns[i];
  return re + ")";
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

std::string regex_escape(const std::string& name) {
  std::string out;
  out.reserve(name.size());
  for (const char c : name) {
    if (c != '\0' && std::strchr(".^$|()[]{}*+?\\", c) != nullptr) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

json adapter_config_to_json(const LoraConfig& config) {
  return {
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
}

LoraConfig adapter_config_from_json(const json& j, const std::string& path) {
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
  return c;
}

}  // namespace lowbit::lora
