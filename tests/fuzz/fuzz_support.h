// What the fuzz targets share: the input written as a file (for parsers that
// take a path) in a scratch directory of this process, and the one rule for
// what a parser may do with bad bytes: throw a std::exception whose message
// names the file. Anything else (a sanitizer report, an abort, another
// exception type, a message that does not say which file) is a finding.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace lowbit::fuzz {

// /tmp/lowbit-fuzz-<pid>, created on first use and removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const auto path = std::filesystem::temp_directory_path() /
                      ("lowbit-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(scratch_dir(), ignored);
    });
    return path;
  }();
  return dir;
}

// Writes `bytes` as `name` in the scratch directory; returns the file's path.
inline std::string write_input(const std::string& name, std::string_view bytes) {
  const std::string path = (scratch_dir() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Runs `parse`; a std::exception is a clean refusal when its message names
// `file` (the path or label the parser was given), and a finding otherwise.
template <typename Parse>
void expect_clean_refusal(const std::string& file, Parse&& parse) {
  try {
    parse();
  } catch (const std::exception& e) {
    if (std::string_view(e.what()).find(file) == std::string_view::npos) {
      std::fprintf(stderr, "fuzz: the error does not name the file '%s':\n%s\n", file.c_str(),
                   e.what());
      std::abort();
    }
  }
}

}  // namespace lowbit::fuzz
