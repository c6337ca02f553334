#include "examples/config/recipe.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "examples/config/schema.h"

namespace lowbit::config {
namespace {
namespace fs = std::filesystem;

std::string joined(const std::vector<std::string>& names, const std::string& prefix = "") {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + prefix + n;
  return out;
}

// Shortest decimal text that reads back as the same double.
std::string shortest(double x) {
  for (int precision = 1;; ++precision) {
    std::ostringstream os;
    os.precision(precision);
    os << x;
    if (precision >= 17 || std::strtod(os.str().c_str(), nullptr) == x) return os.str();
  }
}

std::optional<int64_t> parse_int(const std::string& s) {
  if (s.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return int64_t(v);
}

std::optional<double> parse_float(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (*end != '\0' || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::string emit(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

// Validates one recipe tree and resolves it into canonical values.
class Validator {
 public:
  Validator(std::string source, std::set<std::string> overridden)
      : source_(std::move(source)), overridden_(std::move(overridden)) {}

  // "<file> line 7: optimizer.lr: ..." or "--set optimizer.lr: ...".
  [[noreturn]] void fail(const std::string& path, const YAML::Node& node,
                         const std::string& problem, const std::string& allowed = "") const {
    std::string where = source_;
    if (overridden_.count(path)) {
      where = "--set";
    } else if (node.IsDefined() && node.Mark().line >= 0) {
      where += " line " + std::to_string(node.Mark().line + 1);
    }
    std::string message = where + (where == "--set" ? " " : ": ") + path + ": " + problem;
    if (!allowed.empty()) message += "; allowed: " + allowed;
    throw RecipeError(message);
  }

  // Every key of the tree by its dotted path; unknown keys and non-mapping
  // sections fail here.
  std::map<std::string, YAML::Node> collect(const YAML::Node& root) const {
    const std::vector<std::string> sections = schema_sections();
    std::vector<std::string> top;
    for (const KeySpec& k : recipe_schema()) {
      if (k.path.find('.') == std::string::npos) top.push_back(k.path);
    }
    std::vector<std::string> top_allowed = sections;
    top_allowed.insert(top_allowed.end(), top.begin(), top.end());

    std::map<std::string, YAML::Node> entries;
    for (const auto& item : root) {
      const std::string name = item.first.Scalar();
      const bool is_section = std::find(sections.begin(), sections.end(), name) != sections.end();
      if (!is_section && !find_key(name)) {
        fail(name, item.first, "unknown section or key" + suggestion(name, top_allowed, ""),
             joined(top_allowed));
      }
      if (!is_section) {
        entries[name] = item.second;
        continue;
      }
      if (item.second.IsNull()) {
        entries[name] = item.second;  // an empty section: present, all defaults
        continue;
      }
      if (!item.second.IsMap()) fail(name, item.second, "must be a section (a mapping of keys)");
      std::vector<std::string> keys;
      for (const KeySpec& k : recipe_schema()) {
        if (k.path.rfind(name + ".", 0) == 0) keys.push_back(k.path.substr(name.size() + 1));
      }
      for (const auto& sub : item.second) {
        const std::string path = name + "." + sub.first.Scalar();
        if (!find_key(path)) {
          fail(path, sub.first, "unknown key" + suggestion(sub.first.Scalar(), keys, name + "."),
               "keys of " + name + ": " + joined(keys));
        }
        entries[path] = sub.second;
      }
    }
    return entries;
  }

  // The value of one key in canonical YAML text; fails on a wrong type or
  // an out-of-range value.
  std::string check(const KeySpec& spec, const YAML::Node& node) const {
    const bool list = spec.kind == Kind::IntList || spec.kind == Kind::FloatList ||
                      spec.kind == Kind::StringList;
    if (!node.IsDefined() || node.IsNull()) {
      fail(spec.path, node, "has no value", describe_allowed(spec));
    }
    if (!list) {
      if (!node.IsScalar()) fail(spec.path, node, emit(node) + " is not a single value",
                                 describe_allowed(spec));
      return emit(scalar(spec, node, spec.path));
    }
    if (!node.IsSequence()) {
      fail(spec.path, node, emit(node) + " is not a list", describe_allowed(spec));
    }
    if (spec.list_size >= 0 && int(node.size()) != spec.list_size) {
      fail(spec.path, node,
           emit(node) + " has " + std::to_string(node.size()) + " elements", describe_allowed(spec));
    }
    YAML::Node out(YAML::NodeType::Sequence);
    for (size_t i = 0; i < node.size(); ++i) {
      if (!node[i].IsScalar()) {
        fail(spec.path, node, "element " + std::to_string(i) + " is not a single value",
             describe_allowed(spec));
      }
      out.push_back(scalar(spec, node[i], spec.path + "[" + std::to_string(i) + "]"));
    }
    return emit(out);
  }

 private:
  std::string suggestion(const std::string& word, const std::vector<std::string>& candidates,
                         const std::string& prefix) const {
    const std::string best = closest(word, candidates);
    return best.empty() ? "" : " (did you mean " + prefix + best + "?)";
  }

  YAML::Node scalar(const KeySpec& spec, const YAML::Node& node, const std::string& label) const {
    const std::string text = node.Scalar();
    auto bad = [&](const std::string& what) {
      fail(spec.path, node, (label == spec.path ? "" : label + " ") + "value '" + text + "' " + what,
           describe_allowed(spec));
    };
    auto in_range = [&](double v) {
      const bool low = spec.min_exclusive ? v > spec.min : v >= spec.min;
      if (!low || v > spec.max) bad("is out of range");
    };
    switch (spec.kind) {
      case Kind::Int:
      case Kind::IntList: {
        const auto v = parse_int(text);
        if (!v) bad("is not an integer");
        if (!spec.choices.empty() &&
            std::find(spec.choices.begin(), spec.choices.end(), std::to_string(*v)) ==
                spec.choices.end()) {
          bad("is not allowed");
        }
        in_range(double(*v));
        return YAML::Node(std::to_string(*v));
      }
      case Kind::Float:
      case Kind::FloatList: {
        const auto v = parse_float(text);
        if (!v) bad("is not a finite number");
        in_range(*v);
        return YAML::Node(shortest(*v));
      }
      case Kind::Bool: {
        bool v = false;
        if (!YAML::convert<bool>::decode(node, v)) bad("is not true or false");
        return YAML::Node(v ? "true" : "false");
      }
      case Kind::Choice:
        if (std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end()) {
          const std::string best = closest(text, spec.choices);
          bad("is not allowed" + (best.empty() ? "" : " (did you mean " + best + "?)"));
        }
        return YAML::Node(text);
      case Kind::String:
      case Kind::StringList:
        return YAML::Node(text);
    }
    return YAML::Node(text);
  }

  std::string source_;
  std::set<std::string> overridden_;
};

bool valid_key_text(const std::string& key) {
  if (key.empty() || key.front() == '.' || key.back() == '.') return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
  });
}

// Writes each "key=value" into the tree; returns the keys it set.
std::set<std::string> apply_overrides(YAML::Node& root, const std::vector<std::string>& overrides) {
  std::set<std::string> keys;
  for (const std::string& o : overrides) {
    const size_t eq = o.find('=');
    const std::string key = o.substr(0, eq);
    if (eq == std::string::npos || !valid_key_text(key)) {
      throw RecipeError("--set " + o + ": expected key=value with a dotted key, e.g. "
                        "--set optimizer.lr=3e-4");
    }
    const std::string text = o.substr(eq + 1);
    YAML::Node value;
    try {
      value = text.empty() ? YAML::Node("") : YAML::Load(text);
    } catch (const YAML::Exception& e) {
      throw RecipeError("--set " + key + ": value '" + text + "' is not valid YAML: " + e.msg);
    }
    const size_t dot = key.find('.');
    if (dot == std::string::npos) {
      root[key] = value;
    } else {
      const std::string section = key.substr(0, dot), name = key.substr(dot + 1);
      if (name.find('.') != std::string::npos) {
        throw RecipeError("--set " + key + ": keys have at most two parts (section.key)");
      }
      const YAML::Node existing = static_cast<const YAML::Node&>(root)[section];
      if (!existing.IsDefined() || existing.IsNull()) root[section] = YAML::Node(YAML::NodeType::Map);
      if (!root[section].IsMap()) {
        throw RecipeError("--set " + key + ": '" + section + "' is not a section in the recipe");
      }
      root[section][name] = value;
    }
    keys.insert(key);
  }
  return keys;
}

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

  r.data.name = get<std::string>(v, "data.name");
  r.data.path = get<std::string>(v, "data.path");
  r.data.files = maybe<std::vector<std::string>>(v, "data.files").value_or(std::vector<std::string>{});
  r.data.train_limit = get<int64_t>(v, "data.train_limit");
  r.data.eval_limit = get<int64_t>(v, "data.eval_limit");
  r.data.valid_fraction = maybe<double>(v, "data.valid_fraction").value_or(0.0);

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
  o.fp32_params =
      maybe<std::vector<std::string>>(v, "optimizer.fp32_params").value_or(std::vector<std::string>{});
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

  r.lora.enabled = get<bool>(v, "lora.enabled");
  r.lora.r = get<int64_t>(v, "lora.r");
  r.lora.alpha = get<double>(v, "lora.alpha");
  r.lora.dropout = get<double>(v, "lora.dropout");
  r.lora.rslora = get<bool>(v, "lora.rslora");
  r.lora.target = get<std::vector<std::string>>(v, "lora.target");
  r.lora.dtype = get<std::string>(v, "lora.dtype");

  r.backend = get<std::string>(v, "backend");
  r.checkpoint.dir = get<std::string>(v, "checkpoint.dir");
  r.checkpoint.every = get<int64_t>(v, "checkpoint.every");
  r.checkpoint.keep = get<int64_t>(v, "checkpoint.keep");
  r.checkpoint.resume = get<std::string>(v, "checkpoint.resume");
  r.log.metrics = get<std::string>(v, "log.metrics");
  r.log.plot = get<std::string>(v, "log.plot");
  r.log.progress = get<std::string>(v, "log.progress");
  r.log.every = get<int64_t>(v, "log.every");
}

// Rules that involve more than one key, and the files the recipe names.
void check_recipe(const Recipe& r, const Validator& v, const std::map<std::string, YAML::Node>& given) {
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
  if (images != (r.model.name != "char_gpt")) {
    v.fail("model.name", node("model.name"),
           r.model.name + " cannot train on data.name " + r.data.name,
           "mlp or cnn for fashion_mnist, char_gpt for kjv and fortunes");
  }
  if (r.model.name == "char_gpt" && r.model.n_embd % r.model.n_head != 0) {
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
  const bool torch_optimizer = r.optimizer.name == "adam" || r.optimizer.name == "adamw" ||
                               r.optimizer.name == "rmsprop" || r.optimizer.name == "sgd";
  if (r.lora.enabled && r.lora.dtype != "fp32" && torch_optimizer) {
    v.fail("lora.dtype", node("lora.dtype"),
           r.lora.dtype + " adapters cannot be trained by torch::optim's " + r.optimizer.name +
               " (libtorch has no half-precision CPU optimizer kernels)",
           "fp32 with a torch optimizer; fp16 or bf16 with an 8-bit optimizer");
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
               "'" + r.data.path + "' has no " + f + " (install the Debian package "
               "dataset-fashion-mnist)",
               "a folder holding the four Fashion-MNIST .gz files");
      }
    }
  } else if (r.data.name == "kjv") {
    if (!fs::is_regular_file(fs::path(r.data.path) / "bible.data")) {
      v.fail("data.path", node("data.path"),
             "'" + r.data.path + "' has no bible.data (install the Debian packages bible-kjv and "
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

Recipe load_recipe_text(const std::string& yaml, const std::string& name,
                        const std::string& source, const std::vector<std::string>& overrides) {
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

}  // namespace lowbit::config
