// Test support: the backends a kernel test runs on, and host-side wrappers
// that move std::vector data through any backend's buffers.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/backend.h"
#ifdef LOWBIT_WITH_OPENCL
#include "kernels/opencl/opencl_backend.h"
#endif

namespace lowbit::testing {

// The OpenCL backend on the first visible device, or nullptr. When the
// environment sets LOWBIT_REQUIRE_OPENCL=1 (CI does, with PoCL installed) a
// missing device is a failure, never a silent skip.
inline std::shared_ptr<kernels::Backend> opencl_or_null() {
  if (kernels::opencl_devices().empty()) {
    const char* req = std::getenv("LOWBIT_REQUIRE_OPENCL");
    if (req && std::string(req) == "1")
      ADD_FAILURE() << "LOWBIT_REQUIRE_OPENCL=1 but no OpenCL device is visible";
    return nullptr;
  }
  kernels::BackendOptions o;
  o.kind = "opencl";
  if (const char* name = std::getenv("LOWBIT_OPENCL_DEVICE")) o.device_name = name;
  return kernels::make_backend(o);
}

#define LOWBIT_REQUIRE_OPENCL(var)                                           \
  auto var = ::lowbit::testing::opencl_or_null();                            \
  if (!var) {                                                                \
    GTEST_SKIP() << "no OpenCL device (set LOWBIT_REQUIRE_OPENCL=1 to fail)"; \
  }                                                                          \
  static_assert(true, "")

// The first CUDA device's backend, or nullptr. LOWBIT_REQUIRE_CUDA=1
// (scripts/device.sh sets it) makes a missing device a failure.
inline std::shared_ptr<kernels::Backend> cuda_or_null() {
  if (kernels::cuda_device_count() == 0) {
    const char* req = std::getenv("LOWBIT_REQUIRE_CUDA");
    if (req && std::string(req) == "1")
      ADD_FAILURE() << "LOWBIT_REQUIRE_CUDA=1 but "
                    << (kernels::cuda_built() ? "no CUDA device is visible"
                                              : "this build has no CUDA backend");
    return nullptr;
  }
  return kernels::make_backend({"cuda", 0, ""});
}

// The backends a test runs on, with their names: the CPU, OpenCL when a
// device is present (kept alive by `holder`), and CUDA when built and present
// (CUDA backends live as long as the process).
inline std::vector<std::pair<std::string, kernels::Backend*>> test_backends(
    std::shared_ptr<kernels::Backend>& holder) {
  std::vector<std::pair<std::string, kernels::Backend*>> out = {{"cpu", &kernels::cpu_backend()}};
  holder = opencl_or_null();
  if (holder) out.push_back({holder->name(), holder.get()});
  if (const auto cuda = cuda_or_null()) out.push_back({cuda->name(), cuda.get()});
  return out;
}

#ifdef LOWBIT_WITH_OPENCL
// An OpenCL backend on the device of `opencl` (an OpenCL backend) that keeps 64-bit index
// arithmetic where a call's indices would allow 32 bits: the path that tensors of 2^31
// elements and more take, which the tests' small tensors never reach otherwise.
inline std::unique_ptr<kernels::opencl::OpenClBackend> opencl_with_wide_indices(
    kernels::Backend& opencl) {
  kernels::opencl::DeviceInfo info =
      static_cast<kernels::opencl::OpenClBackend&>(opencl).context().info();
  info.narrow_indices = false;
  return std::make_unique<kernels::opencl::OpenClBackend>(info);
}
#endif

// fn(backend, label) once per work layout: an OpenCL backend's block kernels
// (the optimizer update, the quantizers) in both layouts whatever its device
// is, so that PoCL runs the GPU's layout too; other backends once.
template <typename Fn>
void for_each_layout(kernels::Backend& be, const std::string& name, Fn&& fn) {
#ifdef LOWBIT_WITH_OPENCL
  using Layout = kernels::opencl::OpenClBackend::BlockLayout;
  if (auto* opencl = dynamic_cast<kernels::opencl::OpenClBackend*>(&be)) {
    opencl->set_block_layout(Layout::BlockPerItem);
    fn(be, name + "/block_per_item");
    opencl->set_block_layout(Layout::EightPerItem);
    fn(be, name + "/eight_per_item");
    opencl->set_block_layout(Layout::Auto);
    return;
  }
#endif
  fn(be, name);
}

// Runs `fn` on a host vector through backend buffers.
template <typename T>
std::unique_ptr<kernels::Buffer> upload(kernels::Backend& b, const std::vector<T>& v) {
  auto buf = b.allocate(v.size() * sizeof(T));
  b.write(*buf, v.data(), v.size() * sizeof(T));
  return buf;
}

template <typename T>
std::vector<T> download(kernels::Backend& b, const kernels::Buffer& buf, size_t count) {
  std::vector<T> v(count);
  b.read(buf, v.data(), count * sizeof(T));
  return v;
}

}  // namespace lowbit::testing
