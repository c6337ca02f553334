#include "examples/config/validator.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <sstream>

#include "examples/config/recipe.h"

namespace lowbit::config {
namespace {

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

// Override keys: lower-case words joined by dots.
bool valid_key_text(const std::string& key) {
  if (key.empty() || key.front() == '.' || key.back() == '.') return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
  });
}

}  // namespace

std::string emit(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

void Validator::fail(const std::string& path, const YAML::Node& node, const std::string& problem,
                     const std::string& allowed) const {
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

std::map<std::string, YAML::Node> Validator::collect(const YAML::Node& root) const {
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

std::string Validator::check(const KeySpec& spec, const YAML::Node& node) const {
  const bool list =
      spec.kind == Kind::IntList || spec.kind == Kind::FloatList || spec.kind == Kind::StringList;
  if (!node.IsDefined() || node.IsNull()) {
    fail(spec.path, node, "has no value", describe_allowed(spec));
  }
  if (!list) {
    if (!node.IsScalar())
      fail(spec.path, node, emit(node) + " is not a single value", describe_allowed(spec));
    return emit(scalar(spec, node, spec.path));
  }
  if (!node.IsSequence()) {
    fail(spec.path, node, emit(node) + " is not a list", describe_allowed(spec));
  }
  if (spec.list_size >= 0 && int(node.size()) != spec.list_size) {
    fail(spec.path, node, emit(node) + " has " + std::to_string(node.size()) + " elements",
         describe_allowed(spec));
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

std::string Validator::suggestion(const std::string& word,
                                  const std::vector<std::string>& candidates,
                                  const std::string& prefix) const {
  const std::string best = closest(word, candidates);
  return best.empty() ? "" : " (did you mean " + prefix + best + "?)";
}

YAML::Node Validator::scalar(const KeySpec& spec, const YAML::Node& node,
                             const std::string& label) const {
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
      if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(),
                                             std::to_string(*v)) == spec.choices.end()) {
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
        bad("is not allowed" + suggestion(text, spec.choices, ""));
      }
      return YAML::Node(text);
    case Kind::String:
    case Kind::StringList:
      return YAML::Node(text);
  }
  return YAML::Node(text);
}

std::set<std::string> apply_overrides(YAML::Node& root, const std::vector<std::string>& overrides) {
  std::set<std::string> keys;
  for (const std::string& o : overrides) {
    const size_t eq = o.find('=');
    const std::string key = o.substr(0, eq);
    if (eq == std::string::npos || !valid_key_text(key)) {
      throw RecipeError("--set " + o +
                        ": expected key=value with a dotted key, e.g. "
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
      if (!existing.IsDefined() || existing.IsNull())
        root[section] = YAML::Node(YAML::NodeType::Map);
      if (!root[section].IsMap()) {
        throw RecipeError("--set " + key + ": '" + section + "' is not a section in the recipe");
      }
      root[section][name] = value;
    }
    keys.insert(key);
  }
  return keys;
}

}  // namespace lowbit::config
