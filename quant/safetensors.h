// safetensors (Hugging Face) files for torch tensors: a reader that validates
// every header field and byte range before touching the data, and a writer that
// replaces its target atomically. Layout: 8-byte little-endian header length N,
// N bytes of JSON naming each tensor's dtype, shape and data_offsets, then data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include <torch/types.h>

namespace lowbit::quant {

struct SafetensorsFile {
  // CPU, contiguous, each owning its memory.
  std::map<std::string, torch::Tensor> tensors;
  // The header's "__metadata__" object.
  std::map<std::string, std::string> metadata;
};

// Reads and validates a file. Every failure throws a c10::Error whose message
// names the path, the tensor where one is involved, and what was expected.
SafetensorsFile load_safetensors(const std::string& path);

// The same validation on an in-memory image; `what` names it in messages.
SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, const std::string& what);

// Writes "<path>.tmp.<pid>" in the same directory, fsyncs it, renames it over
// `path` and fsyncs the directory. On failure the previous file at `path` is
// untouched and the temp file removed. Tensors must be strided CPU tensors of
// float64/32/16, bfloat16, int64/32/16/8, uint8 or bool; any strides are fine.
void save_safetensors(const std::string& path,
                      const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The bytes save_safetensors writes for these arguments.
std::string serialize_safetensors(const std::map<std::string, torch::Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

}  // namespace lowbit::quant
