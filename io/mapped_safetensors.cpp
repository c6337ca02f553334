#include "io/mapped_safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace lowbit::io {
namespace {

std::string errno_message() { return std::system_category().message(errno); }

}  // namespace

MappedSafetensors::MappedSafetensors(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TORCH_CHECK(fd >= 0, path, ": cannot open safetensors file: ", errno_message());
  struct stat info {};
  const bool stat_ok = ::fstat(fd, &info) == 0;
  const std::string stat_error = stat_ok ? "" : errno_message();
  void* mapping = MAP_FAILED;
  std::string map_error;
  if (stat_ok && S_ISREG(info.st_mode) && info.st_size > 0) {
    size_ = uint64_t(info.st_size);
    mapping = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) map_error = errno_message();
  }
  ::close(fd);  // the mapping keeps the file
  TORCH_CHECK(stat_ok, path, ": stat failed: ", stat_error);
  TORCH_CHECK(S_ISREG(info.st_mode), path, ": not a regular file");
  TORCH_CHECK(size_ == 0 || mapping != MAP_FAILED, path, ": mmap of ", size_, " bytes failed: ",
              map_error);
  data_ = size_ ? static_cast<uint8_t*>(mapping) : nullptr;
  try {
    header_ = quant::parse_safetensors_header(data_, size_, path);
  } catch (...) {
    if (data_) ::munmap(data_, size_);
    throw;
  }
}

MappedSafetensors::~MappedSafetensors() {
  if (data_) ::munmap(data_, size_);
}

torch::Tensor MappedSafetensors::read(const quant::SafetensorsEntry& entry,
                                      torch::ScalarType dtype) const {
  const uint8_t* buffer = data_ + header_.data_offset;
  torch::Tensor tensor;
  if (entry.dtype == dtype || entry.dtype == torch::kBool) {
    tensor = quant::read_safetensors_entry(entry, buffer, path_).to(dtype);
  } else {
    // Converted straight from the mapping: no copy in the file's dtype.
    // from_blob wants a mutable pointer; the view is only read.
    void* bytes = const_cast<uint8_t*>(buffer + entry.begin);
    tensor = torch::from_blob(bytes, entry.shape, torch::dtype(entry.dtype)).to(dtype);
  }
  // MADV_DONTNEED on a read-only private file mapping only unmaps the pages;
  // a later read faults them back in from the page cache. The range is
  // rounded out to whole pages, which may include a neighbour's bytes: they
  // are refetched the same way.
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t first = (header_.data_offset + entry.begin) / page * page;
  const uint64_t last = std::min(size_, (header_.data_offset + entry.end + page - 1) / page * page);
  if (last > first) ::madvise(data_ + first, last - first, MADV_DONTNEED);
  return tensor;
}

}  // namespace lowbit::io
