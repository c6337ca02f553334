// Faults a discrete GPU's OpenCL driver raises by itself, nothing injected:
// the device's memory running out in the first step, and an update kernel
// that faults on the device (a write to an unmapped address, which tears the
// context down as a lost device does). They need a GPU that does not share
// the host's memory (NVIDIA's OpenCL on the GPU machine, scripts/device.sh)
// and skip elsewhere: on PoCL the first would take the host's memory and the
// second would crash the process. Each takes the whole device, its memory or
// a context, so CTest runs this executable's tests alone (RUN_SERIAL).
#include <gtest/gtest.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "kernels/opencl/cl_runtime.h"
#include "kernels/opencl/opencl_backend.h"
#include "optim/optim.h"
#include "tests/kernels/backends.h"
#include "tests/optim/fault_test_util.h"
#include "tests/optim/optim_test_util.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;
using namespace testing::faults;
using kernels::opencl::DeviceInfo;

// The first OpenCL device's description when it is a GPU with memory of its
// own, else why the test cannot run there.
bool discrete_gpu(DeviceInfo* info, std::string* why) {
  auto shared = testing::opencl_or_null();
  if (!shared) {
    *why = "no OpenCL device (set LOWBIT_REQUIRE_OPENCL=1 to fail)";
    return false;
  }
  *info = static_cast<kernels::opencl::OpenClBackend&>(*shared).context().info();
  if (!info->is_gpu || info->host_unified) {
    *why = info->label + " is not a GPU with memory of its own";
    return false;
  }
  return true;
}

#define LOWBIT_REQUIRE_DISCRETE_GPU(info)          \
  DeviceInfo info;                                 \
  if (std::string why; !discrete_gpu(&info, &why)) \
  GTEST_SKIP() << why

// A backend of its own (a context of its own, its programs built anew).
std::shared_ptr<kernels::Backend> fresh(const DeviceInfo& info) {
  return std::make_shared<kernels::opencl::OpenClBackend>(info);
}

// Takes the device's memory through a context of its own: buffers, each
// filled so that the driver really places it, from large to small until even
// the smallest is refused; then gives them back one at a time, the smallest
// first.
class MemoryFiller {
 public:
  explicit MemoryFiller(const DeviceInfo& info) : device_(info.device) {
    const cl_context_properties props[] = {
        CL_CONTEXT_PLATFORM, reinterpret_cast<cl_context_properties>(info.platform), 0};
    cl_int err = CL_SUCCESS;
    context_ = clCreateContext(props, 1, &device_, nullptr, nullptr, &err);
    EXPECT_EQ(err, CL_SUCCESS) << "clCreateContext";
    queue_ = clCreateCommandQueue(context_, device_, 0, &err);
    EXPECT_EQ(err, CL_SUCCESS) << "clCreateCommandQueue";
  }
  MemoryFiller(const MemoryFiller&) = delete;
  MemoryFiller& operator=(const MemoryFiller&) = delete;
  ~MemoryFiller() {
    while (release_smallest()) {
    }
    if (queue_) clReleaseCommandQueue(queue_);
    if (context_) clReleaseContext(context_);
  }

  void fill() {
    cl_ulong max_alloc = 0;
    clGetDeviceInfo(device_, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof(max_alloc), &max_alloc,
                    nullptr);
    constexpr size_t kSmallest = size_t(64) << 10;
    for (size_t size = std::min<size_t>(max_alloc, size_t(4) << 30); size >= kSmallest;) {
      if (!take(size)) size /= 2;
    }
  }
  bool release_smallest() {
    if (buffers_.empty()) return false;
    clReleaseMemObject(buffers_.back().first);
    taken_ -= buffers_.back().second;
    buffers_.pop_back();
    clFinish(queue_);
    return true;
  }
  size_t taken() const { return taken_; }
  size_t count() const { return buffers_.size(); }

 private:
  bool take(size_t size) {
    cl_int err = CL_SUCCESS;
    cl_mem mem = clCreateBuffer(context_, CL_MEM_READ_WRITE, size, nullptr, &err);
    if (err != CL_SUCCESS) return false;
    const cl_uint pattern = 0;
    err = clEnqueueFillBuffer(queue_, mem, &pattern, sizeof(pattern), 0, size, 0, nullptr,
                              nullptr);
    if (err == CL_SUCCESS) err = clFinish(queue_);
    if (err != CL_SUCCESS) {
      clReleaseMemObject(mem);
      return false;
    }
    buffers_.emplace_back(mem, size);
    taken_ += size;
    return true;
  }

  cl_device_id device_;
  cl_context context_ = nullptr;
  cl_command_queue queue_ = nullptr;
  std::vector<std::pair<cl_mem, size_t>> buffers_;
  size_t taken_ = 0;
};

// The device's memory is taken before the first step, then given back a
// buffer at a time until the step passes. Every step that fails must say so
// with the driver's error and change nothing; the one that passes is a
// twin's first step, bit for bit.
TEST(OpenClDriverFaults, DeviceMemoryRunningOutInTheFirstStepChangesNothing) {
  LOWBIT_REQUIRE_DISCRETE_GPU(info);
  auto backend = fresh(info);
  // With a parameter of 4M values beside the small ones, the step asks for
  // about 40 MB: more than a context keeps in reserve for small buffers (with
  // the small parameters alone, the step passed on a full H200).
  auto pa = make_params();
  pa.push_back((torch::randn({2048, 2048}) * 0.1).set_requires_grad(true));
  auto pb = clone(pa);
  auto a = make_adamw(pa, backend), twin = make_adamw(pb, backend);
  set_grads(pa, 0);
  set_grads(pb, 0);
  MemoryFiller filler(info);
  filler.fill();
  std::printf("device memory taken: %.2f GiB in %zu buffers\n",
              double(filler.taken()) / double(size_t(1) << 30), filler.count());
  int failed = 0;
  std::map<std::string, int> raised_by;
  for (;;) {
    const std::string message = testing::message_of([&] { a->step(); });
    if (message == "(no exception)") break;
    ++failed;
    ++raised_by[first_line(message)];
    for (const char* needle : {"AdamW8bit: ", "opencl:", "Nothing was changed"})
      EXPECT_NE(message.find(needle), std::string::npos) << needle << " not in: " << message;
    EXPECT_TRUE(message.find("CL_MEM_OBJECT_ALLOCATION_FAILURE") != std::string::npos ||
                message.find("CL_OUT_OF_RESOURCES") != std::string::npos)
        << "not the driver's out-of-memory: " << message;
    expect_identical(*a, pa, *twin, pb, "after a failed step");
    if (!filler.release_smallest()) {
      ADD_FAILURE() << "the step fails with all of the device's memory given back: " << message;
      break;
    }
  }
  std::printf("steps refused before one passed: %d, with %.2f GiB still taken\n", failed,
              double(filler.taken()) / double(size_t(1) << 30));
  for (const auto& [text, count] : raised_by) std::printf("  %2d x %s\n", count, text.c_str());
  EXPECT_GE(failed, 1) << "the step never met the full device";
  twin->step();
  expect_identical(*a, pa, *twin, pb, "after the first step");
}

// LOWBIT_OPENCL_SOURCE_DIR pointing at a copy of kernels/ whose update kernel
// writes to an unmapped address when the gradient's first element is
// kPlanted. Restores the variable when it goes.
constexpr float kPlanted = 12345.0f;

class FaultingSources {
 public:
  FaultingSources() {
    const fs::path root = fs::path(scratch_.path()) / "kernels";
    fs::copy(fs::path(LOWBIT_SOURCE_DIR) / "kernels", root, fs::copy_options::recursive);
    const fs::path file = root / "opencl" / "optimizer.cl";
    std::stringstream text;
    text << std::ifstream(file).rdbuf();
    std::string source = text.str();
    // The fault goes first in the kernel's body (the parameter list holds no
    // brace), so it fires whatever the body's layout.
    const std::string entry = "__kernel void optimizer_update(";
    const size_t kernel = source.find(entry);
    const size_t at = kernel == std::string::npos ? kernel : source.find('{', kernel);
    EXPECT_NE(at, std::string::npos) << "no " << entry << " with a body in optimizer.cl";
    if (at == std::string::npos) return;
    source.insert(at + 1,
                  "\n  if (((__global const float*)grad)[0] == " + std::to_string(kPlanted) +
                      "f) *(__global volatile uint*)(ulong)64 = 1u;\n");
    std::ofstream(file) << source;
    setenv("LOWBIT_OPENCL_SOURCE_DIR", root.c_str(), 1);
  }
  FaultingSources(const FaultingSources&) = delete;
  FaultingSources& operator=(const FaultingSources&) = delete;
  ~FaultingSources() { unsetenv("LOWBIT_OPENCL_SOURCE_DIR"); }

 private:
  testing::ScratchDir scratch_;
};

// Set in the child process of the kernel-fault test: where it leaves the
// checkpoint of its first step.
constexpr const char* kChildDir = "LOWBIT_DRIVER_FAULT_CHILD_DIR";

std::string read_bytes(const std::string& path) {
  std::stringstream bytes;
  bytes << std::ifstream(path, std::ios::binary).rdbuf();
  return bytes.str();
}

// The child's part: a first step (checked against a twin on another context),
// its checkpoint written to `dir`, then a second step whose update kernel
// faults on the device.
void step_into_a_fault(const DeviceInfo& info, const std::string& dir) {
  auto pa = make_params(), pb = clone(pa);
  auto twin = make_adamw(pb, fresh(info));
  set_grads(pb, 0);
  twin->step();
  FaultingSources sources;
  auto a = make_adamw(pa, fresh(info));
  set_grads(pa, 0);
  a->step();  // no planted value: as the twin's
  expect_identical(*a, pa, *twin, pb, "after the first step");
  std::ofstream(dir + "/first.ckpt", std::ios::binary) << testing::save_to_string(*a);

  set_grads(pa, 1);
  {
    torch::NoGradGuard no_grad;
    pa[0].mutable_grad().view({-1})[0] = kPlanted;
  }
  const std::string message = testing::message_of([&] { a->step(); });
  std::printf("the faulting step: %s\n", first_line(message).c_str());
  for (const char* needle :
       {"AdamW8bit: the step failed while updating parameter 0 of group 0", "opencl:",
        "state is now inconsistent", "from a checkpoint (load())"})
    EXPECT_NE(message.find(needle), std::string::npos) << needle << " not in: " << message;
  testing::expect_error_all([&] { a->step(); },
                            {"AdamW8bit: an earlier step failed midway (while updating "
                             "parameter 0 of group 0",
                             "restore the model and the optimizer from a checkpoint (load())"});
  // NVIDIA's driver then refuses this process any new context on the device:
  // a clear error naming the call, not a crash.
  const std::string again = testing::message_of([&] { fresh(info); });
  std::printf("a new context in the same process: %s\n", first_line(again).c_str());
  if (again != "(no exception)") {
    EXPECT_NE(again.find("clCreateContext"), std::string::npos) << again;
  }
}

// An update kernel that faults on the device in the second step (in a child
// process: the driver keeps the device from a process after such a fault).
// The driver reports it at the next call that waits; the step must name the
// parameter and say the state is inconsistent, later steps must refuse, and
// the dead context must go without a crash. A restarted process resumes from
// the first step's checkpoint bit for bit.
TEST(OpenClDriverFaults, AKernelThatFaultsOnTheDeviceStopsTheRunAndARestartResumesIt) {
  LOWBIT_REQUIRE_DISCRETE_GPU(info);
  if (const char* dir = std::getenv(kChildDir)) {
    step_into_a_fault(info, dir);
    return;
  }
  testing::ScratchDir scratch;
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const std::string filter =
      std::string("--gtest_filter=OpenClDriverFaults.") +
      ::testing::UnitTest::GetInstance()->current_test_info()->name();
  char* const argv[] = {const_cast<char*>(self.c_str()), const_cast<char*>(filter.c_str()),
                        nullptr};
  setenv(kChildDir, scratch.path().c_str(), 1);
  pid_t child = 0;
  const int spawned = posix_spawn(&child, self.c_str(), nullptr, nullptr, argv, environ);
  unsetenv(kChildDir);
  ASSERT_EQ(spawned, 0) << "posix_spawn " << self;
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the faulting process failed (status " << status << "): see its output above";

  // The restart: this process, a new context, the first step's checkpoint.
  auto backend = fresh(info);
  auto pb = clone(make_params());
  auto twin = make_adamw(pb, backend);
  set_grads(pb, 0);
  twin->step();
  auto pc = clone(pb);
  auto restored = make_adamw(pc, backend);
  testing::load_from_string(*restored, read_bytes(scratch.file("first.ckpt")));
  expect_identical(*restored, pc, *twin, pb, "the faulting process's checkpoint, loaded");
  set_grads(pc, 1);
  set_grads(pb, 1);
  restored->step();
  twin->step();
  expect_identical(*restored, pc, *twin, pb, "after the second step, resumed");
}

}  // namespace
}  // namespace lowbit
