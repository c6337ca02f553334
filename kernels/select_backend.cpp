// Backend selection: the CPU singleton, (in builds with OpenCL) one shared
// OpenCL backend per device, and (in builds with CUDA) one CUDA backend per
// device.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <map>
#include <mutex>
#include <sstream>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef LOWBIT_WITH_OPENCL
#include "kernels/opencl/opencl_backend.h"
#endif
#ifdef LOWBIT_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace lowbit::kernels {
namespace {

#ifndef LOWBIT_WITH_OPENCL
constexpr const char* kNoOpenCl =
    "lowbit: backend 'opencl' was asked for, but this build of lowbit has no OpenCL backend "
    "(configure with -DLOWBIT_OPENCL=ON and the OpenCL headers and loader installed)";
#endif

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

#ifdef LOWBIT_WITH_OPENCL
std::string describe(const std::vector<opencl::DeviceInfo>& devices) {
  if (devices.empty()) return "no OpenCL devices are visible (is an ICD such as pocl-opencl-icd installed?)";
  std::ostringstream os;
  os << "available OpenCL devices:";
  for (size_t i = 0; i < devices.size(); ++i) os << " [" << i << "] " << devices[i].label;
  return os.str();
}

const opencl::DeviceInfo& pick_device(const std::vector<opencl::DeviceInfo>& devices,
                                      const BackendOptions& o) {
  LOWBIT_CHECK(!devices.empty(), "backend 'opencl' was requested but ", describe(devices));
  if (o.device_index >= 0) {
    LOWBIT_CHECK(size_t(o.device_index) < devices.size(), "OpenCL device index ", o.device_index,
                 " is out of range; ", describe(devices));
    return devices[size_t(o.device_index)];
  }
  if (!o.device_name.empty()) {
    for (const auto& d : devices)
      if (lower(d.label).find(lower(o.device_name)) != std::string::npos) return d;
    fail("lowbit: no OpenCL device matches '", o.device_name, "'; ", describe(devices));
  }
  for (const auto& d : devices)
    if (d.is_gpu) return d;
  return devices.front();
}

std::shared_ptr<Backend> opencl_backend_for(const opencl::DeviceInfo& device) {
  static std::mutex mutex;
  static std::map<cl_device_id, std::shared_ptr<Backend>> backends;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = backends[device.device];
  if (!slot) slot = std::make_shared<opencl::OpenClBackend>(device);
  return slot;
}
#endif

}  // namespace

Backend& cpu_backend() {
  static cpu::CpuBackend backend;
  return backend;
}

namespace {

std::shared_ptr<Backend> cuda_backend(int device) {
#ifdef LOWBIT_WITH_CUDA
  return cuda::backend_for_device(device);
#else
  fail("lowbit: CUDA device ", device,
       " was asked for, but this build of lowbit has no CUDA backend (configure with "
       "-DLOWBIT_CUDA=ON against a CUDA-enabled libtorch and a CUDA toolkit)");
#endif
}

// The CPU backend lives for the whole process; handed out without ownership.
std::shared_ptr<Backend> shared_cpu() { return {&cpu_backend(), [](Backend*) {}}; }

}  // namespace

bool cuda_built() {
#ifdef LOWBIT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef LOWBIT_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

namespace {
std::atomic<CudaStreamProvider> stream_provider{nullptr};
std::mutex allocator_mutex;
CudaAllocator installed_allocator;
}  // namespace

void set_cuda_stream_provider(CudaStreamProvider provider) { stream_provider.store(provider); }
CudaStreamProvider cuda_stream_provider() { return stream_provider.load(); }

void set_cuda_allocator(const CudaAllocator& allocator) {
  LOWBIT_CHECK((allocator.allocate == nullptr) == (allocator.release == nullptr),
               "set_cuda_allocator: allocate and release come together");
  std::lock_guard<std::mutex> lock(allocator_mutex);
  installed_allocator = allocator;
}

CudaAllocator cuda_allocator() {
  std::lock_guard<std::mutex> lock(allocator_mutex);
  return installed_allocator;
}

std::shared_ptr<Backend> backend_for(Location where) {
  if (where.is_host()) return shared_cpu();
  return cuda_backend(where.index);
}

BackendChoice choose_backend(const BackendOptions& options) {
  const std::string kind = lower(options.kind);
  if (kind == "cpu") return {shared_cpu(), "asked for (backend: cpu)"};
  if (kind == "opencl") {
#ifdef LOWBIT_WITH_OPENCL
    const auto devices = opencl::list_devices();
    const opencl::DeviceInfo& d = pick_device(devices, options);
    return {opencl_backend_for(d), "asked for (backend: opencl): " + d.label};
#else
    fail(kNoOpenCl);
#endif
  }
  if (kind == "cuda") return {cuda_backend(std::max(options.device_index, 0)), "asked for (backend: cuda)"};
  LOWBIT_CHECK(kind == "auto", "backend '", options.kind,
               "' is not supported; expected one of: auto, cpu, opencl, cuda");
#ifdef LOWBIT_WITH_OPENCL
  const auto devices = opencl::list_devices();
  if (options.device_index >= 0 || !options.device_name.empty()) {
    const opencl::DeviceInfo& d = pick_device(devices, options);
    return {opencl_backend_for(d), "auto with an OpenCL device named: " + d.label};
  }
  for (const auto& d : devices)
    if (opencl::auto_selectable(d))
      return {opencl_backend_for(d),
              "auto: " + d.label + " is a GPU that shares host memory (zero-copy)"};
  if (devices.empty()) return {shared_cpu(), "auto: no OpenCL device found"};
  std::string found;
  for (const auto& d : devices) found += (found.empty() ? "" : ", ") + d.label;
  return {shared_cpu(),
          "auto: no OpenCL GPU shares host memory, and host tensors would cross to a discrete "
          "GPU or another CPU runtime every step (backend: opencl forces it; found: " +
              found + ")"};
#else
  LOWBIT_CHECK(options.device_index < 0 && options.device_name.empty(), kNoOpenCl,
               " (an OpenCL device was named)");
  return {shared_cpu(), "auto: this build has no OpenCL backend"};
#endif
}

std::shared_ptr<Backend> make_backend(const BackendOptions& options) {
  return choose_backend(options).backend;
}

std::vector<std::string> opencl_devices() {
  std::vector<std::string> out;
#ifdef LOWBIT_WITH_OPENCL
  for (const auto& d : opencl::list_devices()) out.push_back(d.label);
#endif
  return out;
}

}  // namespace lowbit::kernels
