// The recipe schema: every key lowbit-train accepts, with its type, default,
// allowed values and the selector that decides whether it applies (e.g.
// optimizer.momentum only for sgd/rmsprop). One table drives validation, the
// defaults, `lowbit-train --list-keys` and the README's key reference.
#pragma once

#include <limits>
#include <string>
#include <vector>

namespace lowbit::config {

enum class Kind { Int, Float, Bool, String, Choice, IntList, FloatList, StringList };

struct KeySpec {
  std::string path;  // "section.key", or "key" at the top level
  Kind kind = Kind::String;
  // The default as YAML text; empty when the key is required or when leaving
  // it out means "the component's own default" (see `required`).
  std::string default_yaml;
  bool required = false;
  // Numbers (and list elements): min <= x <= max; min_exclusive makes it min < x.
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_exclusive = false;
  std::vector<std::string> choices;  // Choice (and Int keys limited to a set)
  int list_size = -1;                // lists: exact length, -1 = any
  // The key only applies when the key `selector` has one of `applies_to`.
  std::string selector;
  std::vector<std::string> applies_to;
  std::string help;
};

const std::vector<KeySpec>& recipe_schema();

// nullptr when `path` is not a key of the schema.
const KeySpec* find_key(const std::string& path);

// Whether optimizer.name names a torch::optim optimizer (not a lowbit one).
bool is_torch_optimizer(const std::string& name);

// The sections (first path components that hold keys) in schema order.
std::vector<std::string> schema_sections();

// "a number in (0, 10]", "one of nf4, fp4", "a list of 2 numbers in [0, 1)".
std::string describe_allowed(const KeySpec& spec);

// The schema as an aligned text table (path, type/allowed, default, help).
std::string schema_reference();

// "a, b, c" (each name with `prefix` in front).
std::string joined(const std::vector<std::string>& names, const std::string& prefix = "");

// The candidate closest to `word` by edit distance, or "" when none is close.
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace lowbit::config
