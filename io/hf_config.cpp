#include "io/hf_config.h"

#include <nlohmann/json.hpp>

#include "quant/json_file.h"

namespace lowbit::io {
namespace {

using nlohmann::json;

// What the transformers config classes (configuration_llama.py,
// configuration_mistral.py, configuration_qwen2.py) default to where
// config.json leaves a key out; only the keys this reader does not require.
struct FamilyInfo {
  LlamaFamily family;
  const char* architecture;
  const char* model_type;
  int64_t max_position_embeddings;
};
constexpr FamilyInfo kFamilies[] = {
    {LlamaFamily::Llama, "LlamaForCausalLM", "llama", 2048},
    {LlamaFamily::Mistral, "MistralForCausalLM", "mistral", 4096 * 32},
    {LlamaFamily::Qwen2, "Qwen2ForCausalLM", "qwen2", 32768},
};

const FamilyInfo& info(LlamaFamily family) {
  for (const FamilyInfo& f : kFamilies)
    if (f.family == family) return f;
  TORCH_CHECK(false, "unknown LlamaFamily ", int(family));
}

std::string supported(bool architectures) {
  std::string names;
  for (const FamilyInfo& f : kFamilies)
    names += std::string(names.empty() ? "" : ", ") + (architectures ? f.architecture : f.model_type);
  return names;
}

struct DTypeName {
  const char* name;
  torch::ScalarType type;
};
constexpr DTypeName kDTypes[] = {
    {"float32", torch::kFloat32}, {"bfloat16", torch::kBFloat16}, {"float16", torch::kFloat16}};

// Typed access to config.json's keys; a null value counts as absent (HF
// writes null for unset options such as pad_token_id or rope_scaling).
class Keys {
 public:
  Keys(const json& object, std::string what) : object_(object), what_(std::move(what)) {}

  const json* find(const char* key) const {
    const auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  std::optional<int64_t> integer(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    TORCH_CHECK(v->is_number_integer(), what_, ": key \"", key, "\" must be an integer, got ",
                v->dump());
    return v->get<int64_t>();
  }

  int64_t positive(const char* key, std::optional<int64_t> fallback = std::nullopt) const {
    const std::optional<int64_t> v = integer(key);
    TORCH_CHECK(v || fallback, what_, ": missing required key \"", key, "\"");
    const int64_t value = v ? *v : *fallback;
    TORCH_CHECK(value > 0, what_, ": key \"", key, "\" must be positive, got ", value);
    return value;
  }

  std::optional<double> number(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    TORCH_CHECK(v->is_number(), what_, ": key \"", key, "\" must be a number, got ", v->dump());
    return v->get<double>();
  }

  double required_number(const char* key, const std::string& context) const {
    const std::optional<double> v = number(key);
    TORCH_CHECK(v, what_, ": missing required key \"", key, "\"", context);
    return *v;
  }

  std::optional<bool> boolean(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    TORCH_CHECK(v->is_boolean(), what_, ": key \"", key, "\" must be true or false, got ",
                v->dump());
    return v->get<bool>();
  }

  std::optional<std::string> string(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    TORCH_CHECK(v->is_string(), what_, ": key \"", key, "\" must be a string, got ", v->dump());
    return v->get<std::string>();
  }

  const std::string& what() const { return what_; }

 private:
  const json& object_;
  std::string what_;
};

LlamaFamily read_family(const Keys& keys) {
  const std::string& what = keys.what();
  std::optional<LlamaFamily> from_architectures;
  if (const json* list = keys.find("architectures")) {
    TORCH_CHECK(list->is_array() && list->size() == 1 && (*list)[0].is_string(), what,
                ": key \"architectures\" must be a list of one class name, got ", list->dump());
    const std::string name = (*list)[0].get<std::string>();
    for (const FamilyInfo& f : kFamilies)
      if (name == f.architecture) from_architectures = f.family;
    TORCH_CHECK(from_architectures, what, ": \"architectures\" value \"", name,
                "\" is not supported; supported: ", supported(true));
  }
  std::optional<LlamaFamily> from_model_type;
  if (const auto type = keys.string("model_type")) {
    for (const FamilyInfo& f : kFamilies)
      if (*type == f.model_type) from_model_type = f.family;
    TORCH_CHECK(from_model_type, what, ": \"model_type\" value \"", *type,
                "\" is not supported; supported: ", supported(false));
  }
  TORCH_CHECK(from_architectures || from_model_type, what,
              ": missing required key \"architectures\" (or \"model_type\")");
  TORCH_CHECK(!from_architectures || !from_model_type || *from_architectures == *from_model_type,
              what, ": \"architectures\" names ", info(*from_architectures).architecture,
              " but \"model_type\" is \"", info(*from_model_type).model_type, "\"");
  return from_architectures ? *from_architectures : *from_model_type;
}

// rope_scaling (transformers 4.x) or rope_parameters (5.x, which also holds
// rope_theta); "type" is the older spelling of "rope_type".
void read_rope(const Keys& keys, LlamaConfig& config) {
  const std::string& what = keys.what();
  if (const auto theta = keys.number("rope_theta")) config.rope_theta = *theta;
  const char* section = keys.find("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const json* rope = keys.find(section);
  if (!rope) return;
  TORCH_CHECK(rope->is_object(), what, ": key \"", section, "\" must be an object or null, got ",
              rope->dump());
  const Keys r(*rope, what + ": \"" + section + "\"");
  if (const auto theta = r.number("rope_theta")) config.rope_theta = *theta;
  std::optional<std::string> type = r.string("rope_type");
  if (!type) type = r.string("type");
  TORCH_CHECK(type, what, ": \"", section, "\" has no \"rope_type\" (or \"type\")");
  RopeScaling& s = config.rope_scaling;
  if (*type == "default") {
    s = RopeScaling{};
    return;
  }
  if (*type == "linear") {
    s.type = RopeType::Linear;
  } else if (*type == "dynamic") {
    s.type = RopeType::Dynamic;
  } else if (*type == "llama3") {
    s.type = RopeType::Llama3;
  } else {
    TORCH_CHECK(false, what, ": \"", section, "\" rope_type \"", *type,
                "\" is not supported; supported: default, linear, dynamic, llama3");
  }
  const std::string context = std::string(" (rope_type \"") + *type + "\")";
  s.factor = r.required_number("factor", context);
  TORCH_CHECK(s.factor > 0, what, ": \"", section, "\" factor must be positive, got ", s.factor);
  if (s.type != RopeType::Llama3) return;
  s.low_freq_factor = r.required_number("low_freq_factor", context);
  s.high_freq_factor = r.required_number("high_freq_factor", context);
  TORCH_CHECK(s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0, what, ": \"",
              section, "\" needs 0 < low_freq_factor < high_freq_factor, got ",
              s.low_freq_factor, " and ", s.high_freq_factor);
  s.original_max_position_embeddings = r.positive("original_max_position_embeddings");
}

std::optional<torch::ScalarType> read_dtype(const Keys& keys) {
  // Newer transformers write "dtype"; older ones "torch_dtype".
  const char* key = keys.find("torch_dtype") ? "torch_dtype" : "dtype";
  const auto name = keys.string(key);
  if (!name) return std::nullopt;
  for (const DTypeName& d : kDTypes)
    if (*name == d.name) return d.type;
  TORCH_CHECK(false, keys.what(), ": key \"", key, "\" value \"", *name,
              "\" is not supported; supported: float32, bfloat16, float16");
}

std::vector<int64_t> read_eos(const Keys& keys) {
  const json* v = keys.find("eos_token_id");
  if (!v) return {};
  if (v->is_number_integer()) return {v->get<int64_t>()};
  TORCH_CHECK(v->is_array(), keys.what(), ": key \"eos_token_id\" must be an integer or a list ",
              "of integers, got ", v->dump());
  std::vector<int64_t> ids;
  for (const json& id : *v) {
    TORCH_CHECK(id.is_number_integer(), keys.what(), ": key \"eos_token_id\" must be an integer ",
                "or a list of integers, got ", v->dump());
    ids.push_back(id.get<int64_t>());
  }
  return ids;
}

}  // namespace

const char* architecture_name(LlamaFamily family) { return info(family).architecture; }
const char* model_type_name(LlamaFamily family) { return info(family).model_type; }

void LlamaConfig::validate(const std::string& what) const {
  for (const auto& [name, value] :
       {std::pair<const char*, int64_t>{"vocab_size", vocab_size},
        {"hidden_size", hidden_size},
        {"intermediate_size", intermediate_size},
        {"num_hidden_layers", num_hidden_layers},
        {"num_attention_heads", num_attention_heads},
        {"num_key_value_heads", num_key_value_heads},
        {"head_dim", head_dim},
        {"max_position_embeddings", max_position_embeddings}})
    TORCH_CHECK(value > 0, what, ": ", name, " must be positive, got ", value);
  TORCH_CHECK(num_attention_heads % num_key_value_heads == 0, what, ": num_attention_heads (",
              num_attention_heads, ") must be a multiple of num_key_value_heads (",
              num_key_value_heads, ")");
  // RoPE rotates pairs of dimensions.
  TORCH_CHECK(head_dim % 2 == 0, what, ": head_dim must be even for rotary embeddings, got ",
              head_dim);
  TORCH_CHECK(rms_norm_eps > 0, what, ": rms_norm_eps must be positive, got ", rms_norm_eps);
  TORCH_CHECK(rope_theta > 0, what, ": rope_theta must be positive, got ", rope_theta);
  TORCH_CHECK(!sliding_window || *sliding_window > 0, what,
              ": sliding_window must be positive, got ", *sliding_window);
  const bool biases_fit = family == LlamaFamily::Llama   ? qkv_bias == o_bias
                          : family == LlamaFamily::Qwen2 ? qkv_bias && !o_bias && !mlp_bias
                                                         : !qkv_bias && !o_bias && !mlp_bias;
  TORCH_CHECK(biases_fit, what, ": ", architecture_name(family),
              " cannot have biases qkv=", qkv_bias, ", o=", o_bias, ", mlp=", mlp_bias,
              " (Llama: q/k/v/o together; Qwen2: q/k/v only; Mistral: none)");
}

namespace {

LlamaConfig llama_config_from_json(const json& root, const std::string& what) {
  TORCH_CHECK(root.is_object(), what, ": expected a JSON object, got ", root.type_name());
  const Keys keys(root, what);
  LlamaConfig c;
  c.family = read_family(keys);
  c.vocab_size = keys.positive("vocab_size");
  c.hidden_size = keys.positive("hidden_size");
  c.intermediate_size = keys.positive("intermediate_size");
  c.num_hidden_layers = keys.positive("num_hidden_layers");
  c.num_attention_heads = keys.positive("num_attention_heads");
  c.num_key_value_heads = keys.positive("num_key_value_heads", c.num_attention_heads);
  if (keys.find("head_dim")) {
    c.head_dim = keys.positive("head_dim");
  } else {
    TORCH_CHECK(c.hidden_size % c.num_attention_heads == 0, what, ": hidden_size (",
                c.hidden_size, ") is not a multiple of num_attention_heads (",
                c.num_attention_heads, ") and no \"head_dim\" is given");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.max_position_embeddings =
      keys.positive("max_position_embeddings", info(c.family).max_position_embeddings);
  c.rms_norm_eps = keys.number("rms_norm_eps").value_or(1e-6);
  read_rope(keys, c);
  if (const auto act = keys.string("hidden_act"))
    TORCH_CHECK(*act == "silu", what, ": key \"hidden_act\" value \"", *act,
                "\" is not supported; the Llama MLP here uses silu (SwiGLU)");
  if (const auto partial = keys.number("partial_rotary_factor"))
    TORCH_CHECK(*partial == 1.0, what, ": key \"partial_rotary_factor\" value ", *partial,
                " is not supported; only full rotary embeddings (1.0) are");
  c.tie_word_embeddings = keys.boolean("tie_word_embeddings").value_or(false);
  c.initializer_range = keys.number("initializer_range").value_or(0.02);
  switch (c.family) {
    case LlamaFamily::Llama:
      c.qkv_bias = c.o_bias = keys.boolean("attention_bias").value_or(false);
      c.mlp_bias = keys.boolean("mlp_bias").value_or(false);
      break;
    case LlamaFamily::Qwen2:
      // Qwen2Attention builds q/k/v_proj with bias=True whatever the config
      // says (transformers modular_qwen2.py); o_proj and the MLP have none.
      c.qkv_bias = true;
      if (keys.boolean("use_sliding_window").value_or(false))
        c.sliding_window = keys.integer("sliding_window");
      break;
    case LlamaFamily::Mistral:
      c.sliding_window = keys.integer("sliding_window");
      break;
  }
  c.torch_dtype = read_dtype(keys);
  c.bos_token_id = keys.integer("bos_token_id");
  c.eos_token_ids = read_eos(keys);
  c.pad_token_id = keys.integer("pad_token_id");
  c.validate(what);
  return c;
}

}  // namespace

LlamaConfig parse_llama_config(const std::string& json_text, const std::string& what) {
  return llama_config_from_json(quant::parse_json(json_text, what), what);
}

LlamaConfig load_llama_config(const std::string& path) {
  return llama_config_from_json(quant::read_json_file(path), path);
}

std::string to_config_json(const LlamaConfig& c) {
  c.validate("to_config_json");
  json j;
  j["architectures"] = json::array({architecture_name(c.family)});
  j["model_type"] = model_type_name(c.family);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeType::Default) {
    j["rope_scaling"] = nullptr;
  } else {
    json r;
    r["rope_type"] = s.type == RopeType::Linear    ? "linear"
                     : s.type == RopeType::Dynamic ? "dynamic"
                                                   : "llama3";
    r["factor"] = s.factor;
    if (s.type == RopeType::Llama3) {
      r["low_freq_factor"] = s.low_freq_factor;
      r["high_freq_factor"] = s.high_freq_factor;
      r["original_max_position_embeddings"] = s.original_max_position_embeddings;
    }
    j["rope_scaling"] = r;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["initializer_range"] = c.initializer_range;
  if (c.family == LlamaFamily::Llama) {
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  if (c.family == LlamaFamily::Qwen2) j["use_sliding_window"] = bool(c.sliding_window);
  if (c.family != LlamaFamily::Llama)
    j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
  if (c.torch_dtype) {
    for (const DTypeName& d : kDTypes)
      if (d.type == *c.torch_dtype) j["torch_dtype"] = d.name;
    TORCH_CHECK(j.contains("torch_dtype"), "to_config_json: torch_dtype ", *c.torch_dtype,
                " is not supported; expected float32, bfloat16 or float16");
  }
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  return j.dump(2) + "\n";
}

}  // namespace lowbit::io
