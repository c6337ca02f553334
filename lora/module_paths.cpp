#include "lora/module_paths.h"

#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

#include "lora/in_place_layer.h"

namespace lowbit::lora {

PathPatterns::PathPatterns(const std::vector<std::string>& patterns, const std::string& what)
    : patterns_(patterns) {
  for (const std::string& p : patterns) {
    TORCH_CHECK(!p.empty(), what, ": an empty pattern would match nothing; remove it");
    try {
      regexes_.emplace_back(p);
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK(false, what, ": '", p, "' is not a valid regular expression (", e.what(), ")");
    }
  }
}

int PathPatterns::first_match(const std::string& path) const {
  for (size_t i = 0; i < regexes_.size(); ++i) {
    const PathRegex& re = regexes_[i];
    if (re.full_match(path)) return int(i);
    for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', dot + 1))
      if (re.full_match(std::string_view(path).substr(dot + 1))) return int(i);
  }
  return -1;
}

std::shared_ptr<torch::nn::Module> find_submodule(torch::nn::Module& root, const std::string& path) {
  TORCH_CHECK(!path.empty(), "find_submodule: the module path is empty");
  std::shared_ptr<torch::nn::Module> current;
  torch::nn::Module* node = &root;
  size_t begin = 0;
  while (begin < path.size()) {
    const size_t dot = path.find('.', begin);
    const std::string name = path.substr(begin, dot == std::string::npos ? dot : dot - begin);
    const auto children = node->named_children();
    const auto* child = children.find(name);
    TORCH_CHECK(child != nullptr, "module path '", path, "': '",
                path.substr(0, dot == std::string::npos ? path.size() : dot),
                "' does not exist (", node->name(), " has no child '", name, "')");
    current = *child;
    node = current.get();
    if (dot == std::string::npos) break;
    begin = dot + 1;
  }
  return current;
}

namespace {

// The parent of `path` and the child's name in it.
std::pair<torch::nn::Module*, std::string> parent_of(torch::nn::Module& root, const std::string& path,
                                                     std::shared_ptr<torch::nn::Module>& holder) {
  TORCH_CHECK(!path.empty(), "replace_submodule: cannot replace the root module itself");
  const size_t dot = path.rfind('.');
  if (dot == std::string::npos) return {&root, path};
  holder = find_submodule(root, path.substr(0, dot));
  return {holder.get(), path.substr(dot + 1)};
}

// Throws unless `path` names a child of a parent whose registry entry can be
// swapped (not a container that runs a private list).
void check_parent(torch::nn::Module& root, const std::string& path) {
  std::shared_ptr<torch::nn::Module> holder;
  auto [parent, name] = parent_of(root, path, holder);
  const bool container = dynamic_cast<torch::nn::SequentialImpl*>(parent) != nullptr ||
                         dynamic_cast<torch::nn::ModuleListImpl*>(parent) != nullptr ||
                         dynamic_cast<torch::nn::ModuleDictImpl*>(parent) != nullptr;
  TORCH_CHECK(!container, "cannot replace '", path, "': its parent is a ", parent->name(),
              ", which calls its children from a private list that replace_module does not "
              "update; wrap the layer in a module that owns it as a named child, or declare it "
              "as lowbit::nn::Linear, which is changed in place");
  TORCH_CHECK(parent->named_children().contains(name), "cannot replace '", path,
              "': no such module");
}

}  // namespace

void check_replaceable(torch::nn::Module& root, const std::string& path) {
  const std::shared_ptr<torch::nn::Module> module = find_submodule(root, path);
  if (dynamic_cast<InPlaceLayer*>(module.get())) return;
  check_parent(root, path);
  // The parent's registry holds one reference and `module` another; any more
  // belong to someone outside the module tree, typically a typed member such
  // as `torch::nn::Linear fc1` that the model's forward calls: it would keep
  // running the old layer (in full precision, or without the adapter).
  const long outside = module.use_count() - 2;
  TORCH_CHECK(outside <= 0, "cannot replace '", path, "' (a ", module->name(), "): ", outside,
              " more reference", outside == 1 ? " is" : "s are",
              " held outside the model's module registry, e.g. by a typed member (such as ",
              "`torch::nn::Linear fc1`) that forward() calls; after the replacement it would ",
              "still run the old layer. Declare the member as lowbit::nn::Linear "
              "(lowbit/nn/linear.h), which quantize_model and apply_lora change in place, or "
              "keep no handle and call the layer through the registry "
              "(lowbit::nn::forward_linear)");
}

void replace_submodule(torch::nn::Module& root, const std::string& path,
                       std::shared_ptr<torch::nn::Module> replacement) {
  if (auto* layer = dynamic_cast<InPlaceLayer*>(find_submodule(root, path).get())) {
    layer->set_impl(std::move(replacement));
    return;
  }
  check_parent(root, path);
  std::shared_ptr<torch::nn::Module> holder;
  auto [parent, name] = parent_of(root, path, holder);
  parent->replace_module(name, std::move(replacement));
}

}  // namespace lowbit::lora
