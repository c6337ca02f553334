// A safetensors file read lazily: the file is memory-mapped, its header
// validated (quant::parse_safetensors_header), and tensors are copied out one
// at a time, so a loader never holds more than the tensor it is working on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "quant/safetensors.h"

namespace lowbit::io {

class MappedSafetensors {
 public:
  // Maps `path` read-only and validates the header; throws naming the path.
  // The file must not be truncated while mapped (a read past its new end
  // faults, as with any mapped file).
  explicit MappedSafetensors(const std::string& path);
  ~MappedSafetensors();
  MappedSafetensors(const MappedSafetensors&) = delete;
  MappedSafetensors& operator=(const MappedSafetensors&) = delete;

  const std::string& path() const { return path_; }
  const quant::SafetensorsHeader& header() const { return header_; }

  // A CPU tensor owning a copy of `entry` (one of header().entries),
  // converted to `dtype`. The file pages it touched are then dropped from
  // this process's resident set (the kernel's page cache keeps them), so
  // reading a large file tensor by tensor keeps the resident size near one
  // tensor.
  torch::Tensor read(const quant::SafetensorsEntry& entry, torch::ScalarType dtype) const;

 private:
  std::string path_;
  uint64_t size_ = 0;
  uint8_t* data_ = nullptr;  // the mapping; nullptr for an empty file
  quant::SafetensorsHeader header_;
};

}  // namespace lowbit::io
