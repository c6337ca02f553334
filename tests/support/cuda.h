// LOWBIT_REQUIRE_CUDA_DEVICE(): skips a torch-level test unless this build has
// the CUDA backend and libtorch sees a CUDA device; with LOWBIT_REQUIRE_CUDA=1
// in the environment (scripts/device.sh) a missing device fails instead.
#pragma once

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "kernels/backend.h"

namespace lowbit::testing {

inline bool cuda_usable() {
  if (kernels::cuda_built() && torch::cuda::is_available()) return true;
  const char* req = std::getenv("LOWBIT_REQUIRE_CUDA");
  if (req && std::string(req) == "1")
    ADD_FAILURE() << "LOWBIT_REQUIRE_CUDA=1 but "
                  << (kernels::cuda_built() ? "libtorch sees no CUDA device"
                                            : "this build has no CUDA backend");
  return false;
}

inline const torch::Device& cuda_device() {
  static const torch::Device device(torch::kCUDA, 0);
  return device;
}

}  // namespace lowbit::testing

#define LOWBIT_REQUIRE_CUDA_DEVICE()                                          \
  if (!::lowbit::testing::cuda_usable()) {                                    \
    GTEST_SKIP() << "no CUDA device (set LOWBIT_REQUIRE_CUDA=1 to fail)"; \
  }                                                                           \
  static_assert(true, "")
