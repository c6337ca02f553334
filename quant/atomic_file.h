// Atomic file replacement: a save either leaves the complete new file at its
// path or, on any failure, the previous file untouched. The bytes go to
// "<path>.tmp.<pid>" in the same directory, which is fsynced, renamed over
// the path, and the directory fsynced so the rename survives a crash.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace lowbit::quant {

// Sink for the bytes of an atomic save, called any number of times in order.
using ByteSink = std::function<void(const char* data, size_t size)>;

// Calls produce(sink) to write the new contents. Errors (including those
// thrown by `produce`) throw c10::Error naming `path` after removing the temp file.
void write_file_atomically(const std::string& path, const std::function<void(const ByteSink&)>& produce);

void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace lowbit::quant
