#include "quant/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include <c10/util/Exception.h>

namespace lowbit::quant {
namespace {

std::string errno_message() { return std::system_category().message(errno); }

// The temp file of an atomic save. It is removed on every path that does not
// reach the rename, so a failed save leaves only the previous file.
class TempFile {
 public:
  explicit TempFile(const std::string& target)
      : target_(target), path_(target + ".tmp." + std::to_string(::getpid())) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    TORCH_CHECK(fd_ >= 0, target_, ": cannot create temp file '", path_, "': ", errno_message());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!renamed_) ::unlink(path_.c_str());
  }

  void write(const char* data, size_t size) {
    while (size > 0) {
      const ssize_t written = ::write(fd_, data, size);
      if (written < 0 && errno == EINTR) continue;
      TORCH_CHECK(written > 0, target_, ": writing temp file '", path_, "' failed: ",
                  errno_message());
      data += written;
      size -= size_t(written);
    }
  }

  // fsync before the rename: otherwise a crash can leave the new name
  // pointing at a file whose data never reached the disk.
  void sync_and_rename() {
    TORCH_CHECK(::fsync(fd_) == 0, target_, ": fsync of temp file '", path_, "' failed: ",
                errno_message());
    const int fd = std::exchange(fd_, -1);
    TORCH_CHECK(::close(fd) == 0, target_, ": closing temp file '", path_, "' failed: ",
                errno_message());
    TORCH_CHECK(std::rename(path_.c_str(), target_.c_str()) == 0, target_, ": cannot rename '",
                path_, "' over it: ", errno_message());
    renamed_ = true;
  }

 private:
  std::string target_;
  std::string path_;
  int fd_ = -1;
  bool renamed_ = false;
};

// The rename is an entry of the directory; until the directory is synced a
// crash can bring the previous file back.
void sync_directory(const std::string& target) {
  std::string dir = std::filesystem::path(target).parent_path().string();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  TORCH_CHECK(fd >= 0, target, ": saved, but opening directory '", dir,
              "' to fsync it failed: ", errno_message());
  const int rc = ::fsync(fd);
  const std::string error = rc == 0 ? "" : errno_message();
  ::close(fd);
  TORCH_CHECK(rc == 0, target, ": saved, but fsync of directory '", dir,
              "' failed, so the save may not survive a crash: ", error);
}

}  // namespace

void write_file_atomically(const std::string& path,
                           const std::function<void(const ByteSink&)>& produce) {
  TempFile temp(path);
  produce([&](const char* data, size_t size) { temp.write(data, size); });
  temp.sync_and_rename();
  sync_directory(path);
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  write_file_atomically(path, [&](const ByteSink& sink) { sink(bytes.data(), bytes.size()); });
}

}  // namespace lowbit::quant
