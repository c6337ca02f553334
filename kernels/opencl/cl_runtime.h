// OpenCL plumbing for the OpenCL backend: device discovery, one context and
// in-order queue per device, a program cache keyed by (source, build options)
// and the LOWBIT_CL_CHECK macro. Internal to kernels/opencl.
#pragma once

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "kernels/error.h"

namespace lowbit::kernels::opencl {

const char* cl_error_name(cl_int err);

}  // namespace lowbit::kernels::opencl

// Throws kernels::Error naming the failing call and the OpenCL error.
#define LOWBIT_CL_CHECK(call)                                                             \
  do {                                                                                    \
    const cl_int lowbit_cl_err_ = (call);                                                 \
    if (lowbit_cl_err_ != CL_SUCCESS)                                                     \
      ::lowbit::kernels::fail("lowbit: OpenCL call ", #call, " failed with ",             \
                              ::lowbit::kernels::opencl::cl_error_name(lowbit_cl_err_), \
                              " (", lowbit_cl_err_, ")");                                 \
  } while (0)

// The same for a call that returns its error through an argument
// (clCreate...): `what` names the call.
#define LOWBIT_CL_CHECK_RESULT(err, what)                                                  \
  do {                                                                                     \
    const cl_int lowbit_cl_err_ = (err);                                                   \
    if (lowbit_cl_err_ != CL_SUCCESS)                                                      \
      ::lowbit::kernels::fail("lowbit: OpenCL call ", what, " failed with ",              \
                              ::lowbit::kernels::opencl::cl_error_name(lowbit_cl_err_),  \
                              " (", lowbit_cl_err_, ")");                                  \
  } while (0)

namespace lowbit::kernels::opencl {

struct DeviceInfo {
  cl_platform_id platform;
  cl_device_id device;
  std::string label;  // "<platform>/<device>"
  bool is_gpu;
  bool host_unified;  // CL_DEVICE_HOST_UNIFIED_MEMORY: shares the host's memory
  // False: the backend treats the device as one without double precision (tests run the host's
  // sums that such devices get); true: as the device reports.
  bool use_fp64 = true;
  // False: kernels keep 64-bit index arithmetic where the call's indices would allow 32 bits
  // (tests run the path that tensors of 2^31 elements and more take).
  bool narrow_indices = true;
  // True: the queue records each command's device time, and the context prints the totals per
  // command when it is destroyed (list_devices sets it from LOWBIT_OPENCL_PROFILE).
  bool profile = false;
};

// Whether backend "auto" may take this device: a GPU that shares the host's
// memory (integrated). A discrete GPU is left to an explicit "opencl": the
// tensors of a CPU run live in host memory, and sending every parameter and
// gradient across PCIe each step loses to the CPU kernels (on the H200
// machine: AdamW8bit at 64M, 76 ms through NVIDIA's OpenCL against 15.8 ms
// on the host's 16 cores).
bool auto_selectable(const DeviceInfo& d);

// Every device of every platform, in a stable order. Empty if no ICD/platform.
std::vector<DeviceInfo> list_devices();

// Owns a cl_mem / cl_kernel / cl_program... and releases it once.
template <typename T, cl_int (*Release)(T)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(T h) : h_(h) {}
  Handle(Handle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  T get() const { return h_; }
  void reset() {
    if (h_) Release(h_);
    h_ = nullptr;
  }

 private:
  T h_ = nullptr;
};

using MemHandle = Handle<cl_mem, clReleaseMemObject>;
using KernelHandle = Handle<cl_kernel, clReleaseKernel>;
using ProgramHandle = Handle<cl_program, clReleaseProgram>;
using QueueHandle = Handle<cl_command_queue, clReleaseCommandQueue>;
using ContextHandle = Handle<cl_context, clReleaseContext>;

// A device with its context, queue and compiled programs.
class DeviceContext {
 public:
  explicit DeviceContext(const DeviceInfo& info);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;
  const DeviceInfo& info() const { return info_; }
  cl_context context() const { return context_.get(); }
  cl_command_queue queue() const { return queue_.get(); }
  cl_device_id device() const { return info_.device; }

  // The program built from the embedded source `name` (see sources.h) with
  // `options`; built once and cached. A failed build throws with the log.
  // With LOWBIT_OPENCL_DUMP set to a folder, each build also writes there
  // <name>-<pid>-<k>.log (device, options, build log: on NVIDIA with
  // -cl-nv-verbose, ptxas's registers, stack frame and spills per kernel) and
  // <name>-<pid>-<k>.bin (the program binary: PTX on NVIDIA); k counts the
  // process's builds.
  cl_program program(const std::string& name, const std::string& options = "");

  // Options every lowbit program is built with on this device.
  const std::string& base_options() const { return base_options_; }
  size_t max_work_group_size() const { return max_work_group_; }
  // CL_DEVICE_MAX_COMPUTE_UNITS: SMs of an NVIDIA GPU, cores of a CPU device.
  size_t compute_units() const { return compute_units_; }
  // CL_DEVICE_LOCAL_MEM_SIZE: the local memory a work-group may use, in bytes.
  size_t local_mem_size() const { return local_mem_size_; }
  // Whether the device computes in double (cl_khr_fp64).
  bool has_fp64() const { return fp64_; }
  // Whether the compiler takes NVIDIA's options (cl_nv_compiler_options: -cl-nv-maxrregcount).
  bool nv_compiler_options() const { return nv_options_; }

  // Profiling (DeviceInfo::profile): `event`, a command of this queue, is added to the totals
  // of `what` once it has finished; the context releases it.
  void record(cl_event event, std::string what);
  // Per command, the largest total first: calls, total and mean device time. Waits for the
  // queue. Empty without profiling.
  std::string profile_report();

 private:
  // LOWBIT_OPENCL_DUMP: `program`'s binary and build log as <stem>.bin and <stem>.log.
  void dump_program(cl_program program, const std::string& stem, const std::string& options) const;

  DeviceInfo info_;
  ContextHandle context_;
  QueueHandle queue_;
  std::string base_options_;
  size_t max_work_group_ = 1;
  size_t compute_units_ = 1;
  size_t local_mem_size_ = 0;
  bool fp64_ = false;
  bool nv_options_ = false;
  std::mutex mutex_;
  std::map<std::pair<std::string, std::string>, ProgramHandle> programs_;

  struct Total {
    size_t calls = 0;
    double ns = 0.0;
  };
  // Adds the finished commands among pending_ to totals_ (all of them after a clFinish).
  void collect_finished();
  std::mutex profile_mutex_;
  std::vector<std::pair<cl_event, std::string>> pending_;
  std::map<std::string, Total> totals_;
};

// The event argument of one enqueue: null unless the context profiles; otherwise the command's
// event, recorded under `what` (or the kernel's name) when this goes out of scope.
class CommandEvent {
 public:
  CommandEvent(DeviceContext& ctx, std::string what) : ctx_(ctx), what_(std::move(what)) {}
  CommandEvent(DeviceContext& ctx, cl_kernel kernel) : ctx_(ctx), kernel_(kernel) {}
  CommandEvent(const CommandEvent&) = delete;
  CommandEvent& operator=(const CommandEvent&) = delete;
  ~CommandEvent();
  cl_event* get() { return ctx_.info().profile ? &event_ : nullptr; }

 private:
  DeviceContext& ctx_;
  std::string what_;
  cl_kernel kernel_ = nullptr;
  cl_event event_ = nullptr;
};

// The OpenCL C source (preludes included) of program `name`: embedded at
// build time, or read from $LOWBIT_OPENCL_SOURCE_DIR (the kernels/ folder of a
// checkout) when that is set, for editing kernels without rebuilding.
std::string program_source(const std::string& name);

}  // namespace lowbit::kernels::opencl
