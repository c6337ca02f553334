// A field of /proc/self/status in bytes ("VmRSS", "VmHWM", "RssFile"), or -1
// where the kernel does not report it.
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

namespace lowbit::testing {

inline int64_t proc_status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(field.size() + 1));
    int64_t kib = 0;
    fields >> kib;
    return kib * 1024;
  }
  return -1;
}

}  // namespace lowbit::testing
