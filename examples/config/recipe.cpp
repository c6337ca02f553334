#include "examples/config/recipe.h"

#include <torch/cuda.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "examples/config/schema.h"
#include "examples/config/validator.h"
#include "kernels/backend.h"

namespace lowbit::config {
namespace {
namespace fs = std::filesystem;

template <typename T>
T get(const std::map<std::string, std::string>& values, const std::string& path) {
  return YAML::Load(values.at(path)).as<T>();
}

template <typename T>
std::optional<T> maybe(const std::map<std::string, std::string>& values, const std::string& path) {
  const auto it = values.find(path);
  if (it == values.end()) return std::nullopt;
  return YAML::Load(it->second).as<T>();
}

std::string quoted(const std::string& s) { return emit(YAML::Node(s)); }

void fill_sections(Recipe& r) {
  const auto& v = r.values;
  r.model.name = get<std::string>(v, "model.name");
  r.model.hidden = maybe<std::vector<int64_t>>(v, "model.hidden").value_or(std::vector<int64_t>{});
  r.model.channels =
      maybe<std::vector<int64_t>>(v, "model.channels").value_or(std::vector<int64_t>{});
  r.model.dropout = get<double>(v, "model.dropout");
  r.model.block_size = maybe<int64_t>(v, "model.block_size").value_or(0);
  r.model.n_layer = maybe<int64_t>(v, "model.n_layer").value_or(0);
  r.model.n_head = maybe<int64_t>(v, "model.n_head").value_or(0);
  r.model.n_embd = maybe<int64_t>(v, "model.n_embd").value_or(0);
  r.model.init = get<std::string>(v, "model.init");
  r.model.path = maybe<std::string>(v, "model.path").value_or("");
  r.model.adapter = maybe<std::string>(v, "model.adapter").value_or("");
  r.model.dtype = maybe<std::string>(v, "model.dtype").value_or("fp32");
  r.model.n_kv_head = maybe<int64_t>(v, "model.n_kv_head").value_or(0);
  r.model.intermediate_size = maybe<int64_t>(v, "model.intermediate_size").value_or(0);
  r.model.vocab_size = maybe<int64_t>(v, "model.vocab_size").value_or(0);
  r.model.rope_theta = maybe<double>(v, "model.rope_theta").value_or(10000.0);
  r.model.gradient_checkpointing = maybe<bool>(v, "model.gradient_checkpointing").value_or(false);

  r.data.name = get<std::string>(v, "data.name");
  r.data.path = get<std::string>(v, "data.path");
  r.data.files =
      maybe<std::vector<std::string>>(v, "data.files").value_or(std::vector<std::string>{});
  r.data.train_limit = get<int64_t>(v, "data.train_limit");
  r.data.eval_limit = get<int64_t>(v, "data.eval_limit");
  r.data.valid_fraction = maybe<double>(v, "data.valid_fraction").value_or(0.0);
  r.data.prompt_template = maybe<std::string>(v, "data.prompt_template").value_or("");
  r.generate.prompts =
      maybe<std::vector<std::string>>(v, "generate.prompts").value_or(std::vector<std::string>{});
  r.generate.max_new_tokens = maybe<int64_t>(v, "generate.max_new_tokens").value_or(48);
  r.generate.temperature = maybe<double>(v, "generate.temperature").value_or(0.0);
  r.generate.top_k = maybe<int64_t>(v, "generate.top_k").value_or(0);
  r.generate.top_p = maybe<double>(v, "generate.top_p").value_or(1.0);

  OptimizerRecipe& o = r.optimizer;
  o.name = get<std::string>(v, "optimizer.name");
  o.lr = maybe<double>(v, "optimizer.lr");
  o.eps = maybe<double>(v, "optimizer.eps");
  o.weight_decay = maybe<double>(v, "optimizer.weight_decay");
  o.momentum = maybe<double>(v, "optimizer.momentum");
  o.alpha = maybe<double>(v, "optimizer.alpha");
  o.max_unorm = maybe<double>(v, "optimizer.max_unorm");
  o.betas = maybe<std::vector<double>>(v, "optimizer.betas");
  o.nesterov = maybe<bool>(v, "optimizer.nesterov");
  o.amsgrad = maybe<bool>(v, "optimizer.amsgrad");
  o.optim_bits = maybe<int64_t>(v, "optimizer.optim_bits");
  o.min_8bit_size = maybe<int64_t>(v, "optimizer.min_8bit_size");
  o.percentile_clipping = maybe<int64_t>(v, "optimizer.percentile_clipping");
  o.block_size = maybe<int64_t>(v, "optimizer.block_size");
  o.fp32_params = maybe<std::vector<std::string>>(v, "optimizer.fp32_params")
                      .value_or(std::vector<std::string>{});
  o.nonfinite = maybe<std::string>(v, "optimizer.nonfinite").value_or("");

  r.schedule.name = get<std::string>(v, "schedule.name");
  r.schedule.warmup_steps = get<int64_t>(v, "schedule.warmup_steps");
  r.schedule.min_lr_ratio = maybe<double>(v, "schedule.min_lr_ratio").value_or(0.0);

  TrainRecipe& t = r.train;
  t.epochs = get<int64_t>(v, "train.epochs");
  t.steps = get<int64_t>(v, "train.steps");
  t.batch_size = get<int64_t>(v, "train.batch_size");
  t.grad_accum = get<int64_t>(v, "train.grad_accum");
  t.grad_clip = get<double>(v, "train.grad_clip");
  t.seed = get<int64_t>(v, "train.seed");
  t.threads = get<int64_t>(v, "train.threads");
  t.eval_every = get<int64_t>(v, "train.eval_every");

  r.quant.enabled = get<bool>(v, "quant.enabled");
  r.quant.type = get<std::string>(v, "quant.type");
  r.quant.block_size = get<int64_t>(v, "quant.block_size");
  r.quant.double_quant = get<bool>(v, "quant.double_quant");
  r.quant.compute_dtype = get<std::string>(v, "quant.compute_dtype");
  r.quant.skip = get<std::vector<std::string>>(v, "quant.skip");
  r.quant.threshold = get<double>(v, "quant.threshold");
  r.quant.overrides = get<std::vector<std::string>>(v, "quant.overrides");

  r.lora.enabled = get<bool>(v, "lora.enabled");
  r.lora.r = get<int64_t>(v, "lora.r");
  r.lora.alpha = get<double>(v, "lora.alpha");
  r.lora.dropout = get<double>(v, "lora.dropout");
  r.lora.rslora = get<bool>(v, "lora.rslora");
  r.lora.target = get<std::vector<std::string>>(v, "lora.target");
  r.lora.dtype = get<std::string>(v, "lora.dtype");

  r.device = get<std::string>(v, "device");  // resolve_device settles auto
  r.backend = get<std::string>(v, "backend");
  r.distributed.zero = get<bool>(v, "distributed.zero");
  r.distributed.timeout = get<int64_t>(v, "distributed.timeout");
  r.checkpoint.dir = get<std::string>(v, "checkpoint.dir");
  r.checkpoint.every = get<int64_t>(v, "checkpoint.every");
  r.checkpoint.keep = get<int64_t>(v, "checkpoint.keep");
  r.checkpoint.resume = get<std::string>(v, "checkpoint.resume");
  r.log.metrics = get<std::string>(v, "log.metrics");
  r.log.plot = get<std::string>(v, "log.plot");
  r.log.progress = get<std::string>(v, "log.progress");
  r.log.every = get<int64_t>(v, "log.every");
}

// Where the run computes. auto takes the GPU where this build has the CUDA
// backend and libtorch sees a GPU, unless the recipe names a host backend:
// the cpu and opencl kernels work on CPU tensors, so naming one asks for a CPU
// run. An explicit cuda that cannot run stops here, before any data is read.
std::string resolve_device(const Recipe& r, const Validator& v, const YAML::Node& node) {
  if (r.device == "auto") {
    const bool gpu = kernels::cuda_built() && torch::cuda::is_available();
    return gpu && r.backend == "auto" ? "cuda" : "cpu";
  }
  if (r.device == "cpu") return "cpu";
  if (r.backend != "auto") {
    v.fail("device", node,
           "cuda cannot run with backend " + r.backend + " (the " +
               (r.backend == "opencl" ? "OpenCL" : "CPU") +
               " kernels work on host tensors; a CUDA run uses the CUDA backend)",
           "backend auto with device cuda; backend cpu or opencl with device cpu or auto");
  }
  if (!kernels::cuda_built()) {
    v.fail("device", node,
           "cuda needs the CUDA backend, which this build of lowbit lacks (it was configured "
           "without a CUDA compiler or against a CPU-only libtorch)",
           "auto or cpu with this build");
  }
  if (!torch::cuda::is_available()) {
    v.fail("device", node,
           "cuda needs a GPU, and libtorch sees none on this machine (check the NVIDIA driver "
           "and CUDA_VISIBLE_DEVICES)",
           "auto or cpu on this machine");
  }
  return "cuda";
}

// Rules that involve more than one key, and the files the recipe names.
void check_recipe(const Recipe& r, const Validator& v,
                  const std::map<std::string, YAML::Node>& given) {
  auto node = [&](const std::string& path) {
    const auto it = given.find(path);
    return it == given.end() ? YAML::Node() : it->second;
  };
  if ((r.train.epochs > 0) == (r.train.steps > 0)) {
    v.fail(r.train.steps > 0 ? "train.steps" : "train.epochs", node("train.epochs"),
           "set exactly one of train.epochs and train.steps above 0 (got epochs " +
               std::to_string(r.train.epochs) + ", steps " + std::to_string(r.train.steps) + ")");
  }
  const bool images = r.data.name == "fashion_mnist";
  const bool image_model = r.model.name == "mlp" || r.model.name == "cnn";
  const bool char_data = r.data.name == "kjv" || r.data.name == "fortunes";
  if (images != image_model || (r.model.name == "char_gpt" && !char_data)) {
    v.fail("model.name", node("model.name"),
           r.model.name + " cannot train on data.name " + r.data.name,
           "mlp or cnn for fashion_mnist, char_gpt for kjv and fortunes, hf_causal_lm or llama "
           "for kjv, fortunes, jsonl and text");
  }
  if (r.model.name == "hf_causal_lm" && r.model.path.empty()) {
    v.fail("model.path", node("model.path"), "is required for model.name hf_causal_lm",
           "a Hugging Face checkpoint folder");
  } else if (r.model.name == "hf_causal_lm" && !fs::is_regular_file(fs::path(r.model.path) / "config.json")) {
    v.fail("model.path", node("model.path"),
           "'" + r.model.path + "' has no config.json",
           "a Hugging Face checkpoint folder (config.json, *.safetensors and a tokenizer)");
  }
  if (r.model.name == "llama" && r.model.n_kv_head > 0 && r.model.n_head % r.model.n_kv_head != 0) {
    v.fail("model.n_kv_head", node("model.n_kv_head"),
           std::to_string(r.model.n_kv_head) + " does not divide model.n_head " +
               std::to_string(r.model.n_head),
           "a divisor of model.n_head");
  }
  for (const std::string& entry : r.quant.overrides) {
    const auto split = split_override(entry);
    if (!split) {
      v.fail("quant.overrides", node("quant.overrides"),
             "entry '" + entry + "' is not PATTERN=FORMAT",
             "a list of \"PATTERN=FORMAT\" with a module-path regex and nf4, fp4, int8 or none");
    }
    const std::vector<std::string> formats = {"nf4", "fp4", "int8", "none"};
    if (std::find(formats.begin(), formats.end(), split->second) == formats.end()) {
      v.fail("quant.overrides", node("quant.overrides"),
             "entry '" + entry + "' names format '" + split->second + "'",
             "a format of nf4, fp4, int8 or none after the '='");
    }
  }
  if (r.model.name == "hf_causal_lm" && r.quant.enabled && !r.quant.overrides.empty()) {
    v.fail("quant.overrides", node("quant.overrides"),
           "a Hugging Face checkpoint is quantized while it is read, all projections alike",
           "no quant.overrides with model.name hf_causal_lm (quant.skip keeps layers in full "
           "precision)");
  }
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors"}) {
    if (!r.model.adapter.empty() && !fs::is_regular_file(fs::path(r.model.adapter) / file)) {
      v.fail("model.adapter", node("model.adapter"),
             "'" + r.model.adapter + "' has no " + file,
             "a PEFT LoRA adapter folder (adapter_config.json and adapter_model.safetensors)");
    }
  }
  if ((r.model.name == "char_gpt" || r.model.name == "llama") && r.model.n_embd % r.model.n_head != 0) {
    v.fail("model.n_embd", node("model.n_embd"),
           std::to_string(r.model.n_embd) + " is not a multiple of model.n_head " +
               std::to_string(r.model.n_head),
           "a multiple of model.n_head");
  }
  if (r.train.steps > 0 && r.schedule.warmup_steps >= r.train.steps) {
    v.fail("schedule.warmup_steps", node("schedule.warmup_steps"),
           std::to_string(r.schedule.warmup_steps) + " is not below train.steps " +
               std::to_string(r.train.steps),
           "fewer warmup steps than training steps");
  }
  if (r.lora.enabled && r.lora.dtype != "fp32" && is_torch_optimizer(r.optimizer.name)) {
    v.fail("lora.dtype", node("lora.dtype"),
           r.lora.dtype + " adapters cannot be trained by torch::optim's " + r.optimizer.name +
               " (libtorch has no half-precision CPU optimizer kernels)",
           "fp32 with a torch optimizer; fp16 or bf16 with an 8-bit optimizer");
  }
  // libtorch 1.13 has no float16 CPU matmul (the LoRA adapter path needs one)
  // and newer ones run it slowly; one rule for every libtorch keeps a recipe
  // meaning the same thing wherever it runs.
  if (r.quant.compute_dtype == "fp16" && r.device == "cpu") {
    v.fail("quant.compute_dtype", node("quant.compute_dtype"),
           "fp16 computes on a GPU only, and this run is on the CPU (device " +
               get<std::string>(r.values, "device") + ")",
           "fp32 or bf16 on the CPU; fp16 with device cuda");
  }
  if (r.optimizer.name == "sgd" && !r.optimizer.lr) {
    v.fail("optimizer.lr", node("optimizer.lr"), "is required for sgd (torch has no default)",
           "a number in (0, 10]");
  }

  // Files: before any data is read or any training starts.
  if (images) {
    for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
      if (!fs::is_regular_file(fs::path(r.data.path) / f)) {
        v.fail("data.path", node("data.path"),
               "'" + r.data.path + "' has no " + f +
                   " (install the Debian package "
                   "dataset-fashion-mnist)",
               "a folder holding the four Fashion-MNIST .gz files");
      }
    }
  } else if (r.data.name == "jsonl" || r.data.name == "text") {
    if (!fs::is_regular_file(r.data.path)) {
      v.fail("data.path", node("data.path"), "'" + r.data.path + "' is not a file",
             r.data.name == "jsonl" ? "a JSONL file of {\"text\": ...} or {\"prompt\": ..., "
                                      "\"response\": ...} records"
                                    : "a plain text file (documents separated by blank lines)");
    }
  } else if (r.data.name == "kjv") {
    if (!fs::is_regular_file(fs::path(r.data.path) / "bible.data")) {
      v.fail("data.path", node("data.path"),
             "'" + r.data.path +
                 "' has no bible.data (install the Debian packages bible-kjv and "
                 "bible-kjv-text)",
             "the folder holding bible.data");
    }
  } else {
    if (!fs::is_directory(r.data.path)) {
      v.fail("data.path", node("data.path"),
             "'" + r.data.path + "' is not a folder (install the Debian package fortunes)",
             "a folder of fortune files");
    }
    for (const std::string& f : r.data.files) {
      if (!fs::is_regular_file(fs::path(r.data.path) / f)) {
        v.fail("data.files", node("data.files"), "'" + f + "' is not a file in " + r.data.path,
               "names of fortune files in data.path");
      }
    }
  }
  if (!r.model.init.empty() && !fs::is_regular_file(r.model.init)) {
    v.fail("model.init", node("model.init"), "'" + r.model.init + "' does not exist",
           "a model.pt or checkpoint written by lowbit-train (run the recipe that trains it "
           "first)");
  }
  const std::string& resume = r.checkpoint.resume;
  if (resume != "auto" && resume != "never" && !fs::is_regular_file(resume)) {
    v.fail("checkpoint.resume", node("checkpoint.resume"), "'" + resume + "' does not exist",
           "auto, never, or a checkpoint file");
  }
}

}  // namespace

Recipe load_recipe_text(const std::string& yaml, const std::string& name, const std::string& source,
                        const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw RecipeError(source + " line " + std::to_string(e.mark.line + 1) +
                      ": not valid YAML: " + e.msg);
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw RecipeError(source + ": a recipe is a mapping of sections");
  const std::set<std::string> overridden = apply_overrides(root, overrides);
  const Validator validator(source, overridden);
  const std::map<std::string, YAML::Node> given = validator.collect(root);

  // Values of given keys first, so selectors are known before the keys they
  // govern are judged.
  Recipe r;
  r.name = name;
  r.source = source;
  for (const KeySpec& spec : recipe_schema()) {
    const auto it = given.find(spec.path);
    if (it != given.end()) {
      r.values[spec.path] = validator.check(spec, it->second);
    } else if (spec.required) {
      validator.fail(spec.path, YAML::Node(), "is missing", describe_allowed(spec));
    } else if (!spec.default_yaml.empty()) {
      r.values[spec.path] = validator.check(spec, YAML::Load(spec.default_yaml));
    }
  }
  for (const KeySpec& spec : recipe_schema()) {
    if (spec.selector.empty()) continue;
    const std::string selected = get<std::string>(r.values, spec.selector);
    if (std::find(spec.applies_to.begin(), spec.applies_to.end(), selected) !=
        spec.applies_to.end()) {
      continue;
    }
    const auto it = given.find(spec.path);
    if (it != given.end()) {
      validator.fail(spec.path, it->second,
                     "does not apply when " + spec.selector + " is " + selected,
                     spec.selector + " " + joined(spec.applies_to));
    }
    r.values.erase(spec.path);
  }

  // Defaults that depend on other keys.
  for (const char* section : {"quant", "lora"}) {
    const std::string key = std::string(section) + ".enabled";
    const bool present = static_cast<const YAML::Node&>(root)[section].IsDefined();
    if (!r.values.count(key)) r.values[key] = present ? "true" : "false";
  }
  if (get<std::string>(r.values, "data.path").empty()) {
    const std::string data = get<std::string>(r.values, "data.name");
    if (data == "jsonl" || data == "text")
      validator.fail("data.path", YAML::Node(), "is required for data.name " + data,
                     "the path of the " + data + " file");
    r.values["data.path"] = quoted(data == "fashion_mnist" ? "/usr/share/datasets/fashion-mnist"
                                   : data == "kjv"         ? "/usr/lib"
                                                           : "/usr/share/games/fortunes");
  }
  if (get<std::string>(r.values, "checkpoint.dir").empty()) {
    r.values["checkpoint.dir"] = quoted("runs/" + name);
  }
  const std::string dir = get<std::string>(r.values, "checkpoint.dir");
  if (get<std::string>(r.values, "log.metrics").empty()) {
    r.values["log.metrics"] = quoted((fs::path(dir) / "metrics.jsonl").string());
  }
  if (get<std::string>(r.values, "log.plot").empty()) {
    r.values["log.plot"] = quoted((fs::path(dir) / "metrics.svg").string());
  }
  fill_sections(r);
  const auto device = given.find("device");
  r.device = resolve_device(r, validator, device == given.end() ? YAML::Node() : device->second);
  check_recipe(r, validator, given);
  return r;
}

Recipe load_recipe_file(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw RecipeError(path + ": cannot open the recipe file");
  std::ostringstream text;
  text << in.rdbuf();
  return load_recipe_text(text.str(), fs::path(path).stem().string(), path, overrides);
}

std::string to_yaml(const Recipe& recipe) {
  std::ostringstream out;
  std::string section;
  for (const KeySpec& spec : recipe_schema()) {
    const auto it = recipe.values.find(spec.path);
    if (it == recipe.values.end()) continue;
    const size_t dot = spec.path.find('.');
    if (dot == std::string::npos) {
      out << spec.path << ": " << it->second << "\n";
      section.clear();
      continue;
    }
    if (spec.path.substr(0, dot) != section) {
      section = spec.path.substr(0, dot);
      out << section << ":\n";
    }
    out << "  " << spec.path.substr(dot + 1) << ": " << it->second << "\n";
  }
  return out.str();
}

std::vector<std::string> changed_keys(const std::string& saved_yaml, const Recipe& recipe,
                                      const std::vector<std::string>& ignored) {
  std::map<std::string, std::string> saved;
  const YAML::Node root = YAML::Load(saved_yaml);
  for (const auto& item : root) {
    const std::string name = item.first.Scalar();
    if (!item.second.IsMap()) {
      saved[name] = emit(item.second);
      continue;
    }
    for (const auto& sub : item.second) saved[name + "." + sub.first.Scalar()] = emit(sub.second);
  }
  auto skipped = [&](const std::string& key) {
    return std::any_of(ignored.begin(), ignored.end(), [&](const std::string& prefix) {
      return key == prefix || key.rfind(prefix + ".", 0) == 0;
    });
  };
  std::set<std::string> keys;
  for (const auto& [k, v] : saved) keys.insert(k);
  for (const auto& [k, v] : recipe.values) keys.insert(k);
  std::vector<std::string> changes;
  for (const std::string& k : keys) {
    if (skipped(k)) continue;
    const auto a = saved.find(k);
    const auto b = recipe.values.find(k);
    const std::string before = a == saved.end() ? "(unset)" : a->second;
    const std::string after = b == recipe.values.end() ? "(unset)" : b->second;
    if (before != after) changes.push_back(k + ": " + before + " -> " + after);
  }
  return changes;
}

std::optional<std::pair<std::string, std::string>> split_override(const std::string& entry) {
  const size_t eq = entry.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == entry.size()) return std::nullopt;
  return std::make_pair(entry.substr(0, eq), entry.substr(eq + 1));
}

}  // namespace lowbit::config
