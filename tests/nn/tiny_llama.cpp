#include "tests/nn/tiny_llama.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "io/hf_checkpoint.h"
#include "quant/safetensors.h"

namespace lowbit::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool qkv_biased(const TinyLlamaSpec& s) { return s.model_type == "qwen2" || s.attention_bias; }

}  // namespace

json tiny_llama_config(const TinyLlamaSpec& s) {
  json c = {{"architectures", {s.architecture}},
            {"model_type", s.model_type},
            {"vocab_size", s.vocab},
            {"hidden_size", s.hidden},
            {"intermediate_size", s.intermediate},
            {"num_hidden_layers", s.layers},
            {"num_attention_heads", s.heads},
            {"num_key_value_heads", s.kv_heads},
            {"head_dim", s.head_dim},
            {"hidden_act", "silu"},
            {"max_position_embeddings", s.max_position_embeddings},
            {"rms_norm_eps", s.rms_norm_eps},
            {"rope_theta", s.rope_theta},
            {"rope_scaling", s.rope_scaling},
            {"tie_word_embeddings", s.tie_word_embeddings},
            {"bos_token_id", 1},
            {"eos_token_id", 2},
            {"transformers_version", "4.45.0"}};
  if (s.model_type == "llama") c["attention_bias"] = s.attention_bias;
  c["torch_dtype"] = s.dtype == torch::kBFloat16 ? "bfloat16"
                     : s.dtype == torch::kFloat16 ? "float16"
                                                  : "float32";
  return c;
}

std::map<std::string, torch::Tensor> tiny_llama_tensors(const TinyLlamaSpec& s) {
  at::Generator gen = at::detail::createCPUGenerator(s.seed);
  std::map<std::string, torch::Tensor> t;
  auto normal = [&](std::vector<int64_t> shape) { return torch::randn(shape, gen) * 0.1; };
  t["model.embed_tokens.weight"] = normal({s.vocab, s.hidden});
  const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t[p + "self_attn.q_proj.weight"] = normal({q, s.hidden});
    t[p + "self_attn.k_proj.weight"] = normal({kv, s.hidden});
    t[p + "self_attn.v_proj.weight"] = normal({kv, s.hidden});
    t[p + "self_attn.o_proj.weight"] = normal({s.hidden, q});
    if (qkv_biased(s)) {
      t[p + "self_attn.q_proj.bias"] = normal({q});
      t[p + "self_attn.k_proj.bias"] = normal({kv});
      t[p + "self_attn.v_proj.bias"] = normal({kv});
    }
    if (s.model_type == "llama" && s.attention_bias) t[p + "self_attn.o_proj.bias"] = normal({s.hidden});
    t[p + "mlp.gate_proj.weight"] = normal({s.intermediate, s.hidden});
    t[p + "mlp.up_proj.weight"] = normal({s.intermediate, s.hidden});
    t[p + "mlp.down_proj.weight"] = normal({s.hidden, s.intermediate});
    t[p + "input_layernorm.weight"] = 1.0 + normal({s.hidden});
    t[p + "post_attention_layernorm.weight"] = 1.0 + normal({s.hidden});
  }
  t["model.norm.weight"] = 1.0 + normal({s.hidden});
  if (!s.tie_word_embeddings) t["lm_head.weight"] = normal({s.vocab, s.hidden});
  return t;
}

void write_tiny_llama(const std::string& dir, const TinyLlamaSpec& spec) {
  std::map<std::string, torch::Tensor> stored;
  for (const auto& [name, value] : tiny_llama_tensors(spec)) stored[name] = value.to(spec.dtype);
  io::save_hf_checkpoint(dir, tiny_llama_config(spec).dump(2), stored, spec.max_shard_bytes);
}

ReferenceLlama::ReferenceLlama(const std::string& dir) {
  config_ = json::parse(slurp((fs::path(dir) / "config.json").string()));
  std::set<std::string> files;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const json map = json::parse(slurp(index.string()))["weight_map"];
    for (const auto& item : map.items()) files.insert(item.value().get<std::string>());
  } else {
    files.insert("model.safetensors");
  }
  for (const std::string& file : files)
    for (const auto& [name, t] : quant::load_safetensors((fs::path(dir) / file).string()).tensors)
      weights_[name] = t.to(torch::kFloat64);
}

void ReferenceLlama::set_weight(const std::string& name, const torch::Tensor& value) {
  weights_.at(name) = value.to(torch::kFloat64);
}

torch::Tensor ReferenceLlama::weight(const std::string& name) const { return weights_.at(name); }

torch::Tensor ReferenceLlama::linear(const std::string& path, const torch::Tensor& x) const {
  torch::Tensor y = torch::matmul(x, weight(path + ".weight").t());
  const auto bias = weights_.find(path + ".bias");
  return bias == weights_.end() ? y : y + bias->second;
}

torch::Tensor ReferenceLlama::rms_norm(const std::string& name, const torch::Tensor& x) const {
  const double eps = config_.at("rms_norm_eps").get<double>();
  return x / torch::sqrt(x.pow(2).mean(-1, true) + eps) * weight(name);
}

// RoPE frequencies as transformers documents them (modeling_rope_utils.py),
// in double precision.
torch::Tensor ReferenceLlama::inverse_frequencies(int64_t seq_len) const {
  const int64_t d = config_.at("head_dim").get<int64_t>();
  const json rope = config_.value("rope_scaling", json());
  // "type" is the older spelling of "rope_type".
  const std::string type = rope.is_null() ? "default"
                                          : rope.value("rope_type", rope.value("type", ""));
  double base = config_.at("rope_theta").get<double>();
  const double max_pos = config_.at("max_position_embeddings").get<double>();
  if (type == "dynamic" && double(seq_len) > max_pos) {
    const double factor = rope.at("factor").get<double>();
    base *= std::pow(factor * double(seq_len) / max_pos - (factor - 1.0), double(d) / double(d - 2));
  }
  std::vector<double> inv(size_t(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) {
    double f = 1.0 / std::pow(base, double(2 * i) / double(d));
    if (type == "linear") f /= rope.at("factor").get<double>();
    if (type == "llama3") {
      const double factor = rope.at("factor").get<double>(), low = rope.at("low_freq_factor").get<double>(),
                   high = rope.at("high_freq_factor").get<double>(),
                   original = rope.at("original_max_position_embeddings").get<double>();
      const double wavelength = 2.0 * M_PI / f;
      if (wavelength > original / low) {
        f /= factor;
      } else if (wavelength >= original / high) {
        const double s = (original / wavelength - low) / (high - low);
        f = (1.0 - s) * f / factor + s * f;
      }
    }
    inv[size_t(i)] = f;
  }
  return torch::tensor(inv, torch::kFloat64);
}

torch::Tensor ReferenceLlama::logits(const std::vector<int64_t>& ids,
                                     const std::vector<bool>& key_mask) const {
  const int64_t T = int64_t(ids.size());
  const int64_t heads = config_.at("num_attention_heads").get<int64_t>();
  const int64_t kv_heads = config_.at("num_key_value_heads").get<int64_t>();
  const int64_t d = config_.at("head_dim").get<int64_t>(), half = d / 2;
  const torch::Tensor angles = torch::arange(T, torch::kFloat64).unsqueeze(1) *
                               inverse_frequencies(T).unsqueeze(0);  // [T, d/2]
  const torch::Tensor cos = angles.cos(), sin = angles.sin();
  // Dimension j pairs with j + d/2 (rotate_half's convention).
  auto rotate = [&](const torch::Tensor& x) {  // x [T, d]
    torch::Tensor out = torch::empty_like(x);
    const torch::Tensor a = x.narrow(1, 0, half), b = x.narrow(1, half, half);
    out.narrow(1, 0, half).copy_(a * cos - b * sin);
    out.narrow(1, half, half).copy_(b * cos + a * sin);
    return out;
  };
  torch::Tensor x = weight("model.embed_tokens.weight").index_select(0, torch::tensor(ids));
  const int64_t layers = config_.at("num_hidden_layers").get<int64_t>();
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const torch::Tensor h = rms_norm(p + "input_layernorm.weight", x);
    const torch::Tensor q = linear(p + "self_attn.q_proj", h);
    const torch::Tensor k = linear(p + "self_attn.k_proj", h);
    const torch::Tensor v = linear(p + "self_attn.v_proj", h);
    torch::Tensor attn = torch::zeros({T, heads * d}, torch::kFloat64);
    for (int64_t head = 0; head < heads; ++head) {
      const int64_t g = head / (heads / kv_heads);
      const torch::Tensor qh = rotate(q.narrow(1, head * d, d));
      const torch::Tensor kh = rotate(k.narrow(1, g * d, d));
      const torch::Tensor vh = v.narrow(1, g * d, d);
      for (int64_t t = 0; t < T; ++t) {
        std::vector<int64_t> keys;
        for (int64_t s = 0; s <= t; ++s)
          if (key_mask.empty() || key_mask[size_t(s)]) keys.push_back(s);
        if (keys.empty()) continue;
        const torch::Tensor idx = torch::tensor(keys);
        const torch::Tensor scores =
            torch::mv(kh.index_select(0, idx), qh[t]) / std::sqrt(double(d));
        attn[t].narrow(0, head * d, d).copy_(torch::mv(vh.index_select(0, idx).t(), scores.softmax(0)));
      }
    }
    x = x + linear(p + "self_attn.o_proj", attn);
    const torch::Tensor h2 = rms_norm(p + "post_attention_layernorm.weight", x);
    const torch::Tensor gate = linear(p + "mlp.gate_proj", h2);
    x = x + linear(p + "mlp.down_proj", gate * torch::sigmoid(gate) * linear(p + "mlp.up_proj", h2));
  }
  x = rms_norm("model.norm.weight", x);
  const bool tied = config_.value("tie_word_embeddings", false);
  return torch::matmul(x, weight(tied ? "model.embed_tokens.weight" : "lm_head.weight").t());
}

}  // namespace lowbit::testing
