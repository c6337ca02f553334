#include "io/hf_checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "quant/atomic_file.h"
#include "quant/json_file.h"

namespace lowbit::io {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string in_dir(const std::string& dir, const std::string& file) {
  return (fs::path(dir) / file).string();
}

// The index's tensors grouped by shard file name.
std::map<std::string, std::vector<std::string>> read_weight_map(const std::string& path) {
  const json index = quant::read_json_file(path);
  const auto map = index.is_object() ? index.find("weight_map") : index.end();
  TORCH_CHECK(map != index.end() && map->is_object(), path,
              ": expected an object with a \"weight_map\" object (tensor name -> shard file)");
  std::map<std::string, std::vector<std::string>> shards;
  for (const auto& [name, file] : map->items()) {
    TORCH_CHECK(file.is_string(), path, ": weight_map entry \"", name,
                "\" must name a shard file, got ", file.dump());
    const std::string shard = file.get<std::string>();
    // Shards live next to the index; a path could reach any file.
    TORCH_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." &&
                    shard != "..",
                path, ": weight_map entry \"", name, "\" names shard \"", shard,
                "\"; expected a file name in the checkpoint directory");
    shards[shard].push_back(name);
  }
  return shards;
}

// The shard names transformers writes: model-00001-of-00003.safetensors.
std::string shard_name(size_t index, size_t count) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return name;
}

// huggingface_hub's split_torch_state_dict_into_shards: tensors in order; a
// tensor that would overflow the current shard starts the next, and one
// larger than the limit gets a shard of its own.
std::vector<std::vector<size_t>> plan_shards(const std::vector<HfTensorSpec>& specs,
                                             uint64_t max_shard_bytes) {
  std::vector<std::vector<size_t>> shards(1);
  uint64_t filled = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const uint64_t bytes = specs[i].bytes();
    if (max_shard_bytes && !shards.back().empty() && filled + bytes > max_shard_bytes) {
      shards.emplace_back();
      filled = 0;
    }
    shards.back().push_back(i);
    filled += bytes;
  }
  return shards;
}

void check_spec_tensor(const HfTensorSpec& spec, const torch::Tensor& t) {
  TORCH_CHECK(t.defined() && t.device().is_cpu(), "save_hf_checkpoint: tensor '", spec.name,
              "' must be a defined CPU tensor");
  TORCH_CHECK(t.sizes() == torch::IntArrayRef(spec.shape) && t.scalar_type() == spec.dtype,
              "save_hf_checkpoint: tensor '", spec.name, "' is ", t.scalar_type(), " ", t.sizes(),
              "; its spec says ", spec.dtype, " ", torch::IntArrayRef(spec.shape));
}

// Files of an earlier save that the new layout does not include.
void remove_stale_weights(const std::string& dir, const std::set<std::string>& keep) {
  static const std::regex shard(R"(model-\d{5}-of-\d{5}\.safetensors)");
  for (const auto& item : fs::directory_iterator(dir)) {
    const std::string name = item.path().filename().string();
    const bool weights = name == kWeightsFile || name == kWeightsIndexFile ||
                         std::regex_match(name, shard);
    if (weights && !keep.count(name)) fs::remove(item.path());
  }
}

}  // namespace

HfCheckpoint::HfCheckpoint(const std::string& dir) : dir_(dir) {
  const std::string index = in_dir(dir, kWeightsIndexFile);
  const std::string single = in_dir(dir, kWeightsFile);
  if (fs::exists(index)) {
    source_ = index;
    sharded_ = true;
    for (const auto& [shard, names] : read_weight_map(index)) {
      const std::string path = in_dir(dir, shard);
      TORCH_CHECK(fs::exists(path), index, ": weight_map places tensor '", names.front(), "'",
                  names.size() > 1 ? " (and " + std::to_string(names.size() - 1) + " more)" : "",
                  " in shard '", shard, "', which does not exist (", path, ")");
      shards_.push_back(std::make_unique<MappedSafetensors>(path));
      const MappedSafetensors& file = *shards_.back();
      std::map<std::string, const quant::SafetensorsEntry*> stored;
      for (const auto& entry : file.header().entries) stored.emplace(entry.name, &entry);
      for (const std::string& name : names) {
        const auto it = stored.find(name);
        TORCH_CHECK(it != stored.end(), path, ": no tensor '", name, "', which ", index,
                    " (weight_map) places in this shard");
        tensors_.emplace(name, Location{&file, it->second});
      }
    }
  } else {
    TORCH_CHECK(fs::exists(single), dir, ": no ", kWeightsFile, " or ", kWeightsIndexFile,
                "; expected a Hugging Face checkpoint in safetensors format (save it with "
                "save_pretrained(..., safe_serialization=True))");
    source_ = single;
    shards_.push_back(std::make_unique<MappedSafetensors>(single));
    for (const auto& entry : shards_.back()->header().entries)
      tensors_.emplace(entry.name, Location{shards_.back().get(), &entry});
  }
}

std::vector<std::string> HfCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& item : tensors_) out.push_back(item.first);
  return out;
}

const HfCheckpoint::Location& HfCheckpoint::locate(const std::string& name) const {
  const auto it = tensors_.find(name);
  TORCH_CHECK(it != tensors_.end(), source_, ": no tensor '", name, "'",
              sharded_ ? " in weight_map" : "");
  return it->second;
}

const quant::SafetensorsEntry& HfCheckpoint::entry(const std::string& name) const {
  return *locate(name).entry;
}

const std::string& HfCheckpoint::file_of(const std::string& name) const {
  return locate(name).file->path();
}

uint64_t HfCheckpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& item : tensors_) total += item.second.entry->end - item.second.entry->begin;
  return total;
}

torch::Tensor HfCheckpoint::read(const std::string& name, torch::ScalarType dtype) const {
  const Location& at = locate(name);
  return at.file->read(*at.entry, dtype);
}

uint64_t HfTensorSpec::bytes() const {
  uint64_t n = c10::elementSize(dtype);
  for (int64_t d : shape) n *= uint64_t(d);
  return n;
}

void save_hf_checkpoint(const std::string& dir, const std::string& config_json,
                        const std::vector<HfTensorSpec>& specs,
                        const std::function<torch::Tensor(const HfTensorSpec&)>& produce,
                        uint64_t max_shard_bytes) {
  const json config = quant::parse_json(config_json, "save_hf_checkpoint: config_json");
  TORCH_CHECK(config.is_object(), "save_hf_checkpoint: config_json must be a JSON object");
  std::set<std::string> seen;
  for (const HfTensorSpec& spec : specs)
    TORCH_CHECK(seen.insert(spec.name).second, "save_hf_checkpoint: tensor '", spec.name,
                "' is listed twice");

  fs::create_directories(dir);
  quant::write_file_atomically(in_dir(dir, kConfigFile), config_json);
  const auto shards = plan_shards(specs, max_shard_bytes);
  // transformers refuses safetensors files without this metadata
  // (modeling_utils.py checks metadata["format"] when loading).
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  json weight_map = json::object();
  uint64_t total = 0;
  std::set<std::string> written;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1 ? kWeightsFile : shard_name(s, shards.size());
    std::map<std::string, torch::Tensor> tensors;
    for (size_t i : shards[s]) {
      torch::Tensor t = produce(specs[i]);
      check_spec_tensor(specs[i], t);
      tensors.emplace(specs[i].name, std::move(t));
      weight_map[specs[i].name] = file;
      total += specs[i].bytes();
    }
    quant::save_safetensors(in_dir(dir, file), tensors, metadata);
    written.insert(file);
  }
  if (shards.size() > 1) {
    const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    quant::write_file_atomically(in_dir(dir, kWeightsIndexFile), index.dump(2) + "\n");
    written.insert(kWeightsIndexFile);
  }
  remove_stale_weights(dir, written);
}

void save_hf_checkpoint(const std::string& dir, const std::string& config_json,
                        const std::map<std::string, torch::Tensor>& tensors,
                        uint64_t max_shard_bytes) {
  std::vector<HfTensorSpec> specs;
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK(t.defined(), "save_hf_checkpoint: tensor '", name, "' is undefined");
    specs.push_back({name, t.sizes().vec(), t.scalar_type()});
  }
  save_hf_checkpoint(
      dir, config_json, specs,
      [&](const HfTensorSpec& spec) { return tensors.at(spec.name).cpu(); }, max_shard_bytes);
}

}  // namespace lowbit::io
