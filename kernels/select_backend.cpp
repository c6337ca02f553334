// Backend selection: the CPU singleton and one shared OpenCL backend per device.
#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>
#include <sstream>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/opencl/opencl_backend.h"

namespace lowbit::kernels {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

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

}  // namespace

Backend& cpu_backend() {
  static cpu::CpuBackend backend;
  return backend;
}

std::shared_ptr<Backend> make_backend(const BackendOptions& options) {
  const std::string kind = lower(options.kind);
  // The CPU backend lives for the whole process; hand it out without ownership.
  const std::shared_ptr<Backend> cpu(&cpu_backend(), [](Backend*) {});
  if (kind == "cpu") return cpu;
  if (kind == "opencl") return opencl_backend_for(pick_device(opencl::list_devices(), options));
  LOWBIT_CHECK(kind == "auto", "backend '", options.kind,
               "' is not supported; expected one of: auto, cpu, opencl");
  const auto devices = opencl::list_devices();
  if (options.device_index >= 0 || !options.device_name.empty())
    return opencl_backend_for(pick_device(devices, options));
  for (const auto& d : devices)
    if (d.is_gpu) return opencl_backend_for(d);
  return cpu;
}

std::vector<std::string> opencl_devices() {
  std::vector<std::string> out;
  for (const auto& d : opencl::list_devices()) out.push_back(d.label);
  return out;
}

}  // namespace lowbit::kernels
