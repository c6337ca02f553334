// safetensors (Hugging Face) files for torch tensors: a reader that validates
// every header field and byte range before touching the data, and a writer that
// replaces its target atomically. Layout: 8-byte little-endian header length N,
// N bytes of JSON naming each tensor's dtype, shape and data_offsets, then data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

namespace lowbit::quant {

struct SafetensorsFile {
  // CPU, contiguous, each owning its memory.
  std::map<std::string, torch::Tensor> tensors;
  // The header's "__metadata__" object.
  std::map<std::string, std::string> metadata;
};

// One tensor of a validated header: its dtype, shape and byte range
// [begin, end) in the data buffer.
struct SafetensorsEntry {
  std::string name;
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct SafetensorsHeader {
  // In data buffer order; they tile the buffer exactly.
  std::vector<SafetensorsEntry> entries;
  // The header's "__metadata__" object.
  std::map<std::string, std::string> metadata;
  // Where the data buffer starts in the file: 8 + the header length.
  uint64_t data_offset = 0;
};

// Validates the length field and the header of a file image of `size` bytes
// at `data` without reading any tensor data, so a caller that maps a file can
// fetch tensors one at a time (read_safetensors_entry). Throws as
// load_safetensors does, naming `what`.
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                           const std::string& what);

// A CPU tensor owning a copy of `entry`'s bytes, taken from `data_buffer` (the
// start of the file's data buffer); BOOL bytes are checked to be 0 or 1.
torch::Tensor read_safetensors_entry(const SafetensorsEntry& entry, const uint8_t* data_buffer,
                                     const std::string& what);

// The format's name of a dtype ("BF16"), or the torch name for a dtype the
// format cannot hold.
std::string safetensors_dtype_name(torch::ScalarType type);

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
