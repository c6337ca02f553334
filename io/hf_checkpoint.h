// Hugging Face checkpoint directories: the weights as one model.safetensors,
// or as shards listed by model.safetensors.index.json ("weight_map": tensor
// name -> shard file), next to config.json. HfCheckpoint maps the files and
// reads one tensor at a time; save_hf_checkpoint writes the same layout.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "io/mapped_safetensors.h"

namespace lowbit::io {

// File names transformers uses (transformers/utils/__init__.py).
inline constexpr const char* kConfigFile = "config.json";
inline constexpr const char* kWeightsFile = "model.safetensors";
inline constexpr const char* kWeightsIndexFile = "model.safetensors.index.json";

class HfCheckpoint {
 public:
  // Opens <dir>/model.safetensors.index.json when present (every shard it
  // names is mapped and must hold the tensors the index assigns to it), else
  // <dir>/model.safetensors. Throws naming the file and the tensor at fault:
  // a missing shard, a tensor the index places in a shard that lacks it.
  explicit HfCheckpoint(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // The index file when sharded, else the single weights file.
  const std::string& source() const { return source_; }
  bool sharded() const { return sharded_; }

  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  // The stored dtype, shape and bytes of `name`, and the file holding it.
  // Throws naming source() when the tensor is not in the checkpoint.
  const quant::SafetensorsEntry& entry(const std::string& name) const;
  const std::string& file_of(const std::string& name) const;
  // The sum of the tensors' stored bytes.
  uint64_t total_bytes() const;

  // Reads `name` (see MappedSafetensors::read) as a CPU tensor of `dtype`.
  torch::Tensor read(const std::string& name, torch::ScalarType dtype) const;

 private:
  struct Location {
    const MappedSafetensors* file;
    const quant::SafetensorsEntry* entry;
  };
  const Location& locate(const std::string& name) const;

  std::string dir_;
  std::string source_;
  bool sharded_ = false;
  std::vector<std::unique_ptr<MappedSafetensors>> shards_;
  std::map<std::string, Location> tensors_;
};

// A tensor to write: its name, shape and dtype (which fix its size before it
// exists, so shards can be planned).
struct HfTensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  torch::ScalarType dtype = torch::kFloat32;
  uint64_t bytes() const;
};

// Writes <dir>/config.json (`config_json`, which must be a JSON object) and
// the tensors: as model.safetensors when they fit `max_shard_bytes` (0: no
// limit), else as model-0000i-of-0000n.safetensors shards of at most that
// size (a larger tensor gets a shard of its own, as transformers'
// save_pretrained does) listed in model.safetensors.index.json. Shards are
// filled in the order given. `produce(spec)` is called shard by shard, so at
// most one shard's tensors are alive; it must return a CPU tensor of the
// spec's shape and dtype. Each file is written atomically (see
// quant::write_file_atomically), the index last; weight files of an earlier
// save into `dir` that the new layout does not use are removed.
void save_hf_checkpoint(const std::string& dir, const std::string& config_json,
                        const std::vector<HfTensorSpec>& specs,
                        const std::function<torch::Tensor(const HfTensorSpec&)>& produce,
                        uint64_t max_shard_bytes = 0);

// The same for tensors at hand, written in name order.
void save_hf_checkpoint(const std::string& dir, const std::string& config_json,
                        const std::map<std::string, torch::Tensor>& tensors,
                        uint64_t max_shard_bytes = 0);

}  // namespace lowbit::io
