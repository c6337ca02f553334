#include "nn/hf_causal_lm.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <chrono>
#include <filesystem>
#include <memory>
#include <set>

#include <torch/nn/modules/linear.h>

#include "io/hf_checkpoint.h"
#include "lora/lora_linear.h"
#include "quant/int8.h"
#include "lora/module_paths.h"
#include "nn/linear_like.h"

namespace lowbit::nn {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Called after each layer is built: the read weight and the quantizer's (or
// Linear's initialisation's) temporaries are freed by then, but glibc keeps freed blocks below its mmap threshold (which grows to 32 MiB
// as large blocks are freed) in the heap, where the packed codes allocated
// in between pin them: without a trim the process kept ~1.6 GiB of freed
// memory after loading a 1B model. malloc_trim hands free heap pages back.
void release_free_heap() {
#ifdef __GLIBC__
  ::malloc_trim(0);
#endif
}

bool is_float(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16;
}

// Reads the tensors a model asks for from a checkpoint, checking each against
// what config.json implies, and remembers which it read.
class CheckedReader {
 public:
  CheckedReader(const io::HfCheckpoint& checkpoint, const io::LlamaConfig& config,
                std::string config_path, bool check_dtype, HfLoadReport& report)
      : checkpoint_(checkpoint),
        config_(config),
        config_path_(std::move(config_path)),
        check_dtype_(check_dtype),
        report_(report) {}

  torch::Tensor read(const std::string& name, const std::vector<int64_t>& shape,
                     std::optional<torch::ScalarType> dtype) {
    const quant::SafetensorsEntry& entry = checkpoint_.entry(name);
    const std::string& file = checkpoint_.file_of(name);
    TORCH_CHECK(is_float(entry.dtype), file, ": tensor '", name, "' is stored as ",
                quant::safetensors_dtype_name(entry.dtype), "; expected F32, BF16 or F16");
    TORCH_CHECK(!check_dtype_ || !config_.torch_dtype || entry.dtype == *config_.torch_dtype, file,
                ": tensor '", name, "' is stored as ", quant::safetensors_dtype_name(entry.dtype),
                " but ", config_path_, " has torch_dtype ",
                quant::safetensors_dtype_name(*config_.torch_dtype),
                " (HfLoadOptions::check_dtype = false converts it anyway)");
    TORCH_CHECK(entry.shape == shape, file, ": tensor '", name, "' has shape ",
                torch::IntArrayRef(entry.shape), " but ", config_path_, " implies ",
                torch::IntArrayRef(shape));
    read_.insert(name);
    ++report_.tensors_read;
    report_.bytes_read += entry.end - entry.begin;
    return checkpoint_.read(name, dtype.value_or(entry.dtype));
  }

  // Throws naming the first tensor of the checkpoint the model did not read.
  void check_all_used() const {
    for (const std::string& name : checkpoint_.names()) {
      if (read_.count(name)) continue;
      // Older transformers saved RoPE's buffer; it is recomputed here.
      if (ends_with(name, ".rotary_emb.inv_freq")) continue;
      // With tied embeddings transformers ignores a saved head.
      if (config_.tie_word_embeddings && name == "lm_head.weight") continue;
      TORCH_CHECK(false, checkpoint_.file_of(name), ": tensor '", name, "' is not part of a ",
                  io::architecture_name(config_.family), " as ", config_path_,
                  " describes it (check num_hidden_layers, tie_word_embeddings and the biases)");
    }
  }

 private:
  const io::HfCheckpoint& checkpoint_;
  const io::LlamaConfig& config_;
  std::string config_path_;
  bool check_dtype_;
  HfLoadReport& report_;
  std::set<std::string> read_;
};

}  // namespace

LlamaForCausalLM load_hf_causal_lm(const std::string& dir, const HfLoadOptions& options,
                                   HfLoadReport* report) {
  const auto start = std::chrono::steady_clock::now();
  TORCH_CHECK(is_float(options.dtype), "load_hf_causal_lm: dtype ", options.dtype,
              " is not supported; expected float32, bfloat16 or float16");
  const std::string config_path = (std::filesystem::path(dir) / io::kConfigFile).string();
  HfLoadReport local;
  HfLoadReport& r = report ? *report : local;
  r = HfLoadReport{};
  r.config = io::load_llama_config(config_path);
  const io::HfCheckpoint checkpoint(dir);
  const lora::PathPatterns quantized(options.quantize ? options.quantize_modules
                                                      : std::vector<std::string>{},
                                     "HfLoadOptions::quantize_modules");
  const lora::PathPatterns kept(options.modules_to_not_convert,
                                "HfLoadOptions::modules_to_not_convert");
  CheckedReader reader(checkpoint, r.config, config_path, options.check_dtype, r);

  LlamaWeights weights;
  weights.tensor = [&](const std::string& name, const std::vector<int64_t>& shape,
                       LlamaWeights::Init) { return reader.read(name, shape, options.dtype); };
  weights.linear = [&](const std::string& path, int64_t in, int64_t out,
                       bool bias) -> std::shared_ptr<torch::nn::Module> {
    if (quantized.matches(path) && !kept.matches(path)) {
      // Quantized from the stored values: no full-precision layer exists.
      const torch::Tensor weight = reader.read(path + ".weight", {out, in}, std::nullopt);
      const torch::Tensor b = bias ? reader.read(path + ".bias", {out}, options.dtype) : torch::Tensor();
      ++r.quantized_layers;
      std::shared_ptr<torch::nn::Module> layer;
      if (options.int8) {
        auto [codes, scb] = quant::quantize_int8_rowwise(weight);
        layer = std::make_shared<lora::Linear8bitImpl>(codes, scb, b, *options.int8);
      } else {
        layer = std::make_shared<lora::Linear4bitImpl>(weight, b, options.linear4bit);
      }
      release_free_heap();
      return layer;
    }
    // torch::nn::Linear allocates and initialises its own weight; it is
    // replaced at once, so only one layer's worth is ever extra.
    torch::nn::Linear linear(torch::nn::LinearOptions(in, out).bias(bias));
    torch::NoGradGuard no_grad;
    linear->weight.set_data(reader.read(path + ".weight", {out, in}, options.dtype));
    if (bias) linear->bias.set_data(reader.read(path + ".bias", {out}, options.dtype));
    release_free_heap();
    return linear.ptr();
  };
  LlamaForCausalLM model(r.config, weights);
  reader.check_all_used();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return model;
}

void save_hf_causal_lm(LlamaForCausalLMImpl& model, const std::string& dir,
                       const HfSaveOptions& options) {
  const torch::ScalarType dtype = options.dtype.value_or(model.dtype());
  TORCH_CHECK(is_float(dtype), "save_hf_causal_lm: dtype ", dtype,
              " is not supported; expected float32, bfloat16 or float16");
  io::LlamaConfig config = model.config();
  config.torch_dtype = dtype;

  // Each stored tensor: a linear-like layer's weight or bias, or a plain
  // parameter (embeddings, norms). A LoraLinear stands for its whole subtree.
  struct Source {
    torch::nn::Module* linear = nullptr;
    bool bias = false;
    torch::Tensor parameter;
  };
  std::vector<io::HfTensorSpec> specs;
  std::map<std::string, Source> sources;
  std::string inside_lora;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const std::string& path = item.key();
    if (!inside_lora.empty() && path.rfind(inside_lora, 0) == 0) continue;
    torch::nn::Module& module = *item.value();
    if (is_linear_like(module)) {
      if (dynamic_cast<lora::LoraLinearImpl*>(&module)) inside_lora = path + ".";
      const LinearShape shape = linear_shape(module);
      specs.push_back({path + ".weight", {shape.out_features, shape.in_features}, dtype});
      sources[path + ".weight"] = {&module, false, {}};
      if (shape.bias) {
        specs.push_back({path + ".bias", {shape.out_features}, dtype});
        sources[path + ".bias"] = {&module, true, {}};
      }
      continue;
    }
    for (const auto& p : module.named_parameters(/*recurse=*/false)) {
      specs.push_back({path + "." + p.key(), p.value().sizes().vec(), dtype});
      sources[path + "." + p.key()] = {nullptr, false, p.value()};
    }
  }
  // A layer's weight and bias are written one after the other: the dense
  // form (a dequantization, a LoRA merge) is computed once for both.
  std::pair<torch::nn::Module*, DenseLinear> last{nullptr, {}};
  auto produce = [&](const io::HfTensorSpec& spec) {
    torch::NoGradGuard no_grad;
    const Source& source = sources.at(spec.name);
    if (!source.linear) return source.parameter.detach().to(torch::kCPU, dtype);
    if (last.first != source.linear) last = {source.linear, dense_linear(*source.linear)};
    const torch::Tensor& t = source.bias ? last.second.bias : last.second.weight;
    return t.to(torch::kCPU, dtype);
  };
  io::save_hf_checkpoint(dir, io::to_config_json(config), specs, produce, options.max_shard_bytes);
}

}  // namespace lowbit::nn
