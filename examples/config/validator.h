// Checks a recipe's YAML tree against the schema (config/schema.h): unknown
// keys with a suggestion, wrong types, out-of-range values, each a RecipeError
// naming where (file and line, or --set), the key, the value and what is
// allowed; and writes --set overrides into the tree. Internal to config/.
#pragma once

#include <yaml-cpp/yaml.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "examples/config/schema.h"

namespace lowbit::config {

class Validator {
 public:
  // `source` names the recipe in messages; `overridden` are the keys --set gave.
  Validator(std::string source, std::set<std::string> overridden)
      : source_(std::move(source)), overridden_(std::move(overridden)) {}

  // Throws "<file> line 7: optimizer.lr: <problem>; allowed: <allowed>" (or
  // "--set optimizer.lr: ..."); the line comes from `node` when it has one.
  [[noreturn]] void fail(const std::string& path, const YAML::Node& node,
                         const std::string& problem, const std::string& allowed = "") const;

  // Every key of the tree by its dotted path; unknown keys and sections that
  // are not mappings fail here.
  std::map<std::string, YAML::Node> collect(const YAML::Node& root) const;

  // The value of one key in canonical YAML text (numbers in their shortest
  // round-trip form); fails on a wrong type or an out-of-range value.
  std::string check(const KeySpec& spec, const YAML::Node& node) const;

 private:
  std::string suggestion(const std::string& word, const std::vector<std::string>& candidates,
                         const std::string& prefix) const;
  YAML::Node scalar(const KeySpec& spec, const YAML::Node& node, const std::string& label) const;

  std::string source_;
  std::set<std::string> overridden_;
};

// Writes each "key=value" (the value parsed as YAML) into the tree, creating
// sections as needed; returns the keys it set. Malformed overrides throw.
std::set<std::string> apply_overrides(YAML::Node& root, const std::vector<std::string>& overrides);

// A node as one line of YAML (flow style).
std::string emit(const YAML::Node& node);

}  // namespace lowbit::config
