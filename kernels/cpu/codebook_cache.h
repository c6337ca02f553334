// One object per distinct 256-entry codebook (Encoder8, Decoder8), built on
// first use and kept for the process: optimizer steps look them up per
// parameter instead of rebuilding their tables. Internal to kernels/cpu.
#pragma once

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>

namespace lowbit::kernels::cpu {

template <typename T>
const T& for_codebook(const float* code) {
  static std::mutex mutex;
  static std::map<std::array<float, 256>, std::unique_ptr<T>> cache;
  std::array<float, 256> key;
  std::copy(code, code + 256, key.begin());
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[key];
  if (!slot) slot = std::make_unique<T>(code);
  return *slot;
}

}  // namespace lowbit::kernels::cpu
