#include "quant/safetensors.h"

#include "quant/atomic_file.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowbit::quant {
namespace {

using nlohmann::json;

// Tensor bytes are copied as they lie in memory, and safetensors is little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors IO copies raw bytes and needs a little-endian host");

// The reference implementation's cap: it bounds what a corrupt length field
// can make a reader allocate.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr uint64_t kMaxInt64 = uint64_t(std::numeric_limits<int64_t>::max());
constexpr const char* kMetadataKey = "__metadata__";

struct DTypeName {
  const char* name;
  torch::ScalarType type;
};
// The format's dtypes that libtorch 1.13 can hold; it has no U16/U32/U64 or
// float8 types, so files using them are refused rather than reinterpreted.
constexpr DTypeName kDTypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16},
    {"BF16", torch::kBFloat16}, {"I64", torch::kInt64}, {"I32", torch::kInt32},
    {"I16", torch::kInt16},   {"I8", torch::kInt8},     {"U8", torch::kUInt8},
    {"BOOL", torch::kBool},
};

std::string supported_dtypes() {
  std::string names;
  for (const DTypeName& d : kDTypes) names += std::string(names.empty() ? "" : ", ") + d.name;
  return names;
}

const char* dtype_name(torch::ScalarType type) {
  for (const DTypeName& d : kDTypes) {
    if (d.type == type) return d.name;
  }
  return nullptr;
}

std::optional<torch::ScalarType> dtype_from_name(const std::string& name) {
  for (const DTypeName& d : kDTypes) {
    if (name == d.name) return d.type;
  }
  return std::nullopt;
}

std::string errno_message() { return std::system_category().message(errno); }

// A JSON value for an error message, cut short so a corrupt header cannot
// flood the message.
std::string brief(const json& value) {
  std::string text = value.dump();
  return text.size() <= 48 ? text : text.substr(0, 45) + "...";
}

// A non-negative JSON integer; nullopt for negatives, fractions and non-numbers.
std::optional<uint64_t> as_count(const json& value) {
  if (value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0)) {
    return value.get<uint64_t>();
  }
  return std::nullopt;
}

using Entry = SafetensorsEntry;
using Header = SafetensorsHeader;

// Validates the file size and the length field; reads `prefix` only once the
// file is known to hold 8 bytes.
uint64_t header_length(const uint8_t* prefix, uint64_t file_size, const std::string& what) {
  TORCH_CHECK(file_size >= 8, what, ": file is ", file_size,
              " bytes; a safetensors file starts with an 8-byte header length");
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | prefix[i];
  TORCH_CHECK(length <= kMaxHeaderBytes, what, ": header length ", length, " exceeds the ",
              kMaxHeaderBytes, "-byte limit; the length field is corrupt");
  TORCH_CHECK(length <= file_size - 8, what, ": header length ", length, " exceeds the ",
              file_size - 8, " bytes after the length field; the file is truncated or corrupt");
  return length;
}

json parse_json(const char* text, size_t size, const std::string& what) {
  // JSON never holds a raw NUL, but nlohmann's lexer takes one as the end of
  // input and would ignore whatever follows it.
  const void* nul = std::memchr(text, '\0', size);
  TORCH_CHECK(nul == nullptr, what, ": header is not valid JSON: NUL byte at header offset ",
              static_cast<const char*>(nul) - text);
  // nlohmann silently keeps the last of duplicate keys; a tensor named twice is
  // ambiguous, so the keys of every open object are tracked.
  std::vector<std::set<std::string>> open_objects;
  std::optional<std::string> duplicate;
  auto track_keys = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !duplicate) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text, text + size, track_keys);
  } catch (const json::exception& e) {
    TORCH_CHECK(false, what, ": header is not valid JSON: ", e.what());
  }
  TORCH_CHECK(!duplicate, what, ": header has the key \"", *duplicate,
              "\" twice; each tensor and field must appear once");
  return header;
}

std::map<std::string, std::string> parse_metadata(const json& value, const std::string& what) {
  TORCH_CHECK(value.is_object(), what, ": \"", kMetadataKey,
              "\" must be an object of strings, got ", value.type_name());
  std::map<std::string, std::string> metadata;
  for (const auto& [key, text] : value.items()) {
    TORCH_CHECK(text.is_string(), what, ": \"", kMetadataKey, "\" entry \"", key,
                "\" must be a string, got ", brief(text));
    metadata.emplace(key, text.get<std::string>());
  }
  return metadata;
}

Entry parse_entry(const std::string& name, const json& info, uint64_t data_size,
                  const std::string& what) {
  const std::string where = what + ": tensor '" + name + "'";
  TORCH_CHECK(info.is_object(), where,
              ": expected an object with \"dtype\", \"shape\" and \"data_offsets\", got ",
              info.type_name());
  auto field = [&](const char* key) -> const json& {
    const auto it = info.find(key);
    TORCH_CHECK(it != info.end(), where, ": missing \"", key, "\"");
    return *it;
  };

  const json& dtype = field("dtype");
  TORCH_CHECK(dtype.is_string(), where, ": \"dtype\" must be a string, got ", brief(dtype));
  const auto type = dtype_from_name(dtype.get<std::string>());
  TORCH_CHECK(type, where, ": dtype ", brief(dtype), " is not supported; supported: ",
              supported_dtypes());

  const json& shape = field("shape");
  TORCH_CHECK(shape.is_array(), where,
              ": \"shape\" must be an array of non-negative integers, got ", brief(shape));
  Entry entry{name, *type, {}, 0, 0};
  // torch's contiguous strides are products of max(dim, 1), so that product
  // must fit int64 even when a zero dim makes the tensor empty.
  uint64_t extent = 1;
  uint64_t numel = 1;
  for (const json& dim : shape) {
    const auto size = as_count(dim);
    TORCH_CHECK(size, where, ": shape entry ", brief(dim), " is not a non-negative integer");
    TORCH_CHECK(std::max<uint64_t>(*size, 1) <= kMaxInt64 / extent, where, ": shape ",
                brief(shape), " is too large; its element count overflows int64");
    extent *= std::max<uint64_t>(*size, 1);
    numel *= *size;
    entry.shape.push_back(int64_t(*size));
  }
  const uint64_t element_size = c10::elementSize(*type);
  TORCH_CHECK(numel <= kMaxInt64 / element_size, where, ": shape ", brief(shape),
              " is too large; its byte count overflows int64");
  const uint64_t bytes = numel * element_size;

  const json& offsets = field("data_offsets");
  const bool pair = offsets.is_array() && offsets.size() == 2;
  const auto begin = pair ? as_count(offsets[0]) : std::nullopt;
  const auto end = pair ? as_count(offsets[1]) : std::nullopt;
  TORCH_CHECK(begin && end && *begin <= *end, where,
              ": \"data_offsets\" must be [begin, end] with integers 0 <= begin <= end, got ",
              brief(offsets));
  TORCH_CHECK(*end <= data_size, where, ": data_offsets ", brief(offsets),
              " end beyond the ", data_size, "-byte data buffer");
  TORCH_CHECK(*end - *begin == bytes, where, ": data_offsets ", brief(offsets), " hold ",
              *end - *begin, " bytes but shape ", brief(shape), " of ", dtype.get<std::string>(),
              " needs ", bytes);
  entry.begin = *begin;
  entry.end = *end;
  return entry;
}

// The format requires the tensors to tile the data buffer exactly: an overlap
// would alias two tensors, and a gap or trailing bytes mean a corrupt file.
void check_tiling(std::vector<Entry>& entries, uint64_t data_size, const std::string& what) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry& entry : entries) {
    TORCH_CHECK(entry.begin >= covered, what, ": tensor '", entry.name, "' at bytes [",
                entry.begin, ", ", entry.end, ") overlaps tensor '", previous->name, "' at [",
                previous->begin, ", ", previous->end, ")");
    TORCH_CHECK(entry.begin == covered, what, ": data bytes [", covered, ", ", entry.begin,
                ") before tensor '", entry.name,
                "' belong to no tensor; the data buffer must be fully covered");
    covered = entry.end;
    previous = &entry;
  }
  TORCH_CHECK(covered == data_size, what, ": data bytes [", covered, ", ", data_size,
              ") after the last tensor belong to no tensor; the data buffer must be fully covered");
}

Header parse_header(const char* text, size_t size, uint64_t data_size, const std::string& what) {
  const json header = parse_json(text, size, what);
  TORCH_CHECK(header.is_object(), what, ": header must be a JSON object, got ",
              header.type_name());
  Header parsed;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      parsed.metadata = parse_metadata(value, what);
    } else {
      parsed.entries.push_back(parse_entry(key, value, data_size, what));
    }
  }
  check_tiling(parsed.entries, data_size, what);
  return parsed;
}

// An entry's tensor, its bytes supplied by `fill`. torch assumes bool bytes
// are 0 or 1 (other bytes make == and sum disagree), so BOOL data is checked.
template <typename Fill>
torch::Tensor read_tensor(const Entry& entry, const std::string& what, Fill&& fill) {
  torch::Tensor tensor = torch::empty(entry.shape, torch::dtype(entry.dtype));
  const size_t bytes = entry.end - entry.begin;
  if (bytes == 0) return tensor;
  auto* data = static_cast<uint8_t*>(tensor.data_ptr());
  fill(data, bytes);
  if (entry.dtype == torch::kBool) {
    const auto* bad = std::find_if(data, data + bytes, [](uint8_t b) { return b > 1; });
    TORCH_CHECK(bad == data + bytes, what, ": tensor '", entry.name, "' (BOOL) has byte ",
                int(*bad), " at element ", bad - data, "; BOOL bytes must be 0 or 1");
  }
  return tensor;
}

using File = std::unique_ptr<FILE, int (*)(FILE*)>;

void read_exact(FILE* file, void* out, size_t size, uint64_t offset, const std::string& path) {
  if (std::fread(out, 1, size, file) == size) return;
  TORCH_CHECK(!std::ferror(file), path, ": read of ", size, " bytes at offset ", offset,
              " failed: ", errno_message());
  TORCH_CHECK(false, path, ": file ended before offset ", offset + size,
              "; it changed while being read");
}

// Where save_safetensors's bytes come from: the length field, padded JSON and
// the tensors' contiguous data, in file order.
struct Layout {
  std::string header;
  std::vector<torch::Tensor> data;

  template <typename Sink>
  void emit(Sink&& sink) const {
    sink(header.data(), header.size());
    for (const torch::Tensor& tensor : data) {
      const size_t bytes = tensor.numel() * tensor.element_size();
      if (bytes > 0) sink(static_cast<const char*>(tensor.data_ptr()), bytes);
    }
  }
};

// nlohmann throws when dumping invalid UTF-8; checking each string first lets
// the error say which one.
void check_utf8(const std::string& text, const std::string& role) {
  try {
    (void)json(text).dump();
  } catch (const json::exception& e) {
    TORCH_CHECK(false, "safetensors: ", role, " is not valid UTF-8: ", e.what());
  }
}

Layout plan(const std::map<std::string, torch::Tensor>& tensors,
            const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  Layout layout;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    TORCH_CHECK(name != kMetadataKey, "safetensors: \"", kMetadataKey,
                "\" is reserved for metadata and cannot name a tensor");
    check_utf8(name, "tensor name '" + name + "'");
    TORCH_CHECK(tensor.defined(), "safetensors: tensor '", name, "' is undefined");
    // CUDA tensors are written from a host copy; other devices (meta: no
    // data) and layouts are refused.
    TORCH_CHECK((tensor.device().is_cpu() || tensor.device().is_cuda()) &&
                    tensor.layout() == torch::kStrided,
                "safetensors: tensor '", name, "' is a ", tensor.layout(), " tensor on ",
                tensor.device(),
                "; expected a strided CPU or CUDA tensor (call .cpu() / .to_dense())");
    const char* dtype = dtype_name(tensor.scalar_type());
    TORCH_CHECK(dtype, "safetensors: tensor '", name, "' has dtype ", tensor.scalar_type(),
                "; supported: ", supported_dtypes());
    // A lazily negated view (e.g. the imaginary part of a conjugate) carries
    // its sign as a flag, not in its bytes.
    torch::Tensor data = tensor.resolve_neg().cpu().contiguous();
    const uint64_t bytes = data.numel() * data.element_size();
    json entry = json::object();
    entry["dtype"] = dtype;
    entry["shape"] = data.sizes().vec();
    entry["data_offsets"] = json::array({offset, offset + bytes});
    header[name] = std::move(entry);
    offset += bytes;
    layout.data.push_back(std::move(data));
  }
  if (!metadata.empty()) {
    for (const auto& [key, value] : metadata) {
      check_utf8(key, "metadata key '" + key + "'");
      check_utf8(value, "metadata value of '" + key + "'");
    }
    header[kMetadataKey] = metadata;
  }
  std::string text = header.dump();
  // Trailing spaces are JSON whitespace; they start the data buffer 8-byte
  // aligned so a reader that maps the file can use 8-byte dtypes in place.
  text.append((8 - text.size() % 8) % 8, ' ');
  for (int i = 0; i < 8; ++i) layout.header.push_back(char(uint64_t(text.size()) >> (8 * i)));
  layout.header += text;
  return layout;
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                           const std::string& what) {
  TORCH_CHECK(data != nullptr || size == 0, what, ": null data pointer");
  const uint64_t length = header_length(data, size, what);
  Header header =
      parse_header(reinterpret_cast<const char*>(data) + 8, length, size - 8 - length, what);
  header.data_offset = 8 + length;
  return header;
}

torch::Tensor read_safetensors_entry(const SafetensorsEntry& entry, const uint8_t* data_buffer,
                                     const std::string& what) {
  return read_tensor(entry, what, [&](uint8_t* out, size_t bytes) {
    std::memcpy(out, data_buffer + entry.begin, bytes);
  });
}

std::string safetensors_dtype_name(torch::ScalarType type) {
  const char* name = dtype_name(type);
  return name ? name : c10::toString(type);
}

SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, const std::string& what) {
  Header header = parse_safetensors_header(data, size, what);
  SafetensorsFile file;
  file.metadata = std::move(header.metadata);
  for (const Entry& entry : header.entries)
    file.tensors.emplace(entry.name,
                         read_safetensors_entry(entry, data + header.data_offset, what));
  return file;
}

SafetensorsFile load_safetensors(const std::string& path) {
  File file(std::fopen(path.c_str(), "rb"), &std::fclose);
  TORCH_CHECK(file, path, ": cannot open safetensors file: ", errno_message());
  struct stat info {};
  TORCH_CHECK(::fstat(::fileno(file.get()), &info) == 0, path, ": stat failed: ", errno_message());
  TORCH_CHECK(S_ISREG(info.st_mode), path, ": not a regular file");
  const uint64_t size = uint64_t(info.st_size);

  uint8_t prefix[8] = {};
  if (size >= 8) read_exact(file.get(), prefix, 8, 0, path);
  const uint64_t length = header_length(prefix, size, path);
  std::string text(length, '\0');
  read_exact(file.get(), text.data(), length, 8, path);
  Header header = parse_header(text.data(), length, size - 8 - length, path);

  // The entries tile the data buffer in order, so reading them one after
  // another walks the file front to back without seeking.
  SafetensorsFile loaded;
  loaded.metadata = std::move(header.metadata);
  for (const Entry& entry : header.entries) {
    loaded.tensors.emplace(entry.name, read_tensor(entry, path, [&](uint8_t* out, size_t bytes) {
                             read_exact(file.get(), out, bytes, 8 + length + entry.begin, path);
                           }));
  }
  return loaded;
}

std::string serialize_safetensors(const std::map<std::string, torch::Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::string bytes;
  plan(tensors, metadata).emit([&](const char* data, size_t size) { bytes.append(data, size); });
  return bytes;
}

void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Planning validates every tensor before any file is created.
  const Layout layout = plan(tensors, metadata);
  write_file_atomically(path, [&](const ByteSink& sink) { layout.emit(sink); });
}

}  // namespace lowbit::quant
