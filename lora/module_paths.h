// Module paths ("blocks.0.attn.qkv", as named_modules() spells them): the
// name patterns quantize_model and apply_lora select layers with, and the
// in-place swap of one submodule for another through its parent's registry.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "lora/path_regex.h"

namespace lowbit::lora {

// Patterns are regular expressions in Python's re syntax (see PathRegex,
// which matches in linear time). A pattern matches a path when
// it matches the whole path or a whole dot-separated suffix of it, so "fc1"
// selects "blocks.0.mlp.fc1" (PEFT's target_modules rule for plain names) and
// "blocks\.0\..*" selects everything under blocks.0 (PEFT's regex rule).
class PathPatterns {
 public:
  // `what` names the option in errors (e.g. "QuantizeConfig::skip").
  PathPatterns(const std::vector<std::string>& patterns, const std::string& what);
  bool matches(const std::string& path) const { return first_match(path) >= 0; }
  // The index of the first pattern that matches `path`, or -1.
  int first_match(const std::string& path) const;
  bool empty() const { return regexes_.empty(); }
  size_t size() const { return regexes_.size(); }
  const std::string& pattern(size_t i) const { return patterns_[i]; }

 private:
  std::vector<std::string> patterns_;
  std::vector<PathRegex> regexes_;
};

// The submodule at `path` (non-empty) under `root`; throws naming the first
// missing component.
std::shared_ptr<torch::nn::Module> find_submodule(torch::nn::Module& root, const std::string& path);

// Throws unless replace_submodule(root, path, ...) would succeed and take
// effect: an InPlaceLayer always can be; any other module is refused when
// its parent is a container (see below) or when a reference to it is held
// outside the module tree (a typed member such as `torch::nn::Linear fc1`
// would keep running the old layer). Call it while holding no handle to
// that module yourself.
void check_replaceable(torch::nn::Module& root, const std::string& path);

// Makes `replacement` what runs at `path` (non-empty): an InPlaceLayer there
// takes it as its implementation (set_impl); any other module is swapped for
// it in its parent's module registry, which is what named_modules(),
// parameters() and name-based calls see. Parents that call their children
// from a private list (Sequential, ModuleList, ModuleDict) would keep running
// the old module, so they are refused with a message saying so.
void replace_submodule(torch::nn::Module& root, const std::string& path,
                       std::shared_ptr<torch::nn::Module> replacement);

}  // namespace lowbit::lora
