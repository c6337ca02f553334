// Faults an optimizer step meets on the OpenCL backend: a kernel that does not
// build, an allocation that fails, a copy to or from the device that fails, a
// device lost during the updates. They are injected without a hook in the
// library: this executable defines clBuildProgram, clCreateBuffer,
// clEnqueueWriteBuffer, clEnqueueReadBuffer and clEnqueueNDRangeKernel, which
// the statically linked backend calls instead of the ICD loader's; they fail
// when a test asks and otherwise forward to the loader's (dlsym(RTLD_NEXT)).
// Each test checks that its calls went through here. clGetDeviceInfo is
// defined too, to report less local memory than the device has (the 4-bit
// matmul's choice of tiles), and clBuildProgram records the options it built.
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
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

namespace {

using lowbit::testing::faults::Injection;

Injection builds, buffers, updates, writes, update_reads;
// Set by the first fused update kernel since a test cleared it: update_reads
// counts only the reads from then on (the updates themselves read nothing
// back; through device buffers each parameter is copied out after its
// kernel), so a test can fail the reads of the updates whatever read before.
bool updates_began = false;
// Nonzero: what clGetDeviceInfo reports as CL_DEVICE_LOCAL_MEM_SIZE.
cl_ulong reported_local_mem = 0;
// The options of every program built, in order.
std::vector<std::string> built_options;
// How often the host waited for the device: blocking copies, clFinish, clEnqueueMapBuffer and
// clWaitForEvents.
int waits = 0;
// How many failed buffers wrapped host memory (CL_MEM_USE_HOST_PTR): the
// parameters', gradients' and states' tensors on a device that shares it.
int failed_host_buffers = 0;

template <typename Fn>
Fn loader_function(const char* name) {
  void* f = dlsym(RTLD_NEXT, name);
  if (!f) std::abort();  // no ICD loader linked: the build is broken
  return reinterpret_cast<Fn>(f);
}

std::string kernel_name(cl_kernel k) {
  char name[128] = {0};
  clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof(name) - 1, name, nullptr);
  return name;
}

}  // namespace

extern "C" {

CL_API_ENTRY cl_int CL_API_CALL clBuildProgram(cl_program program, cl_uint num_devices,
                                               const cl_device_id* device_list,
                                               const char* options,
                                               void(CL_CALLBACK* pfn_notify)(cl_program, void*),
                                               void* user_data) {
  using Fn = decltype(&clBuildProgram);
  static const Fn real = loader_function<Fn>("clBuildProgram");
  if (builds.fails_now()) return CL_BUILD_PROGRAM_FAILURE;
  built_options.push_back(options ? options : "");
  return real(program, num_devices, device_list, options, pfn_notify, user_data);
}

CL_API_ENTRY cl_int CL_API_CALL clGetDeviceInfo(cl_device_id device, cl_device_info name,
                                                size_t size, void* value, size_t* size_ret) {
  using Fn = decltype(&clGetDeviceInfo);
  static const Fn real = loader_function<Fn>("clGetDeviceInfo");
  if (name == CL_DEVICE_LOCAL_MEM_SIZE && reported_local_mem != 0) {
    if (size_ret) *size_ret = sizeof(cl_ulong);
    if (value) {
      if (size < sizeof(cl_ulong)) return CL_INVALID_VALUE;
      std::memcpy(value, &reported_local_mem, sizeof(cl_ulong));
    }
    return CL_SUCCESS;
  }
  return real(device, name, size, value, size_ret);
}

CL_API_ENTRY cl_mem CL_API_CALL clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size,
                                               void* host_ptr, cl_int* errcode_ret) {
  using Fn = decltype(&clCreateBuffer);
  static const Fn real = loader_function<Fn>("clCreateBuffer");
  if (buffers.fails_now()) {
    if (flags & CL_MEM_USE_HOST_PTR) ++failed_host_buffers;
    if (errcode_ret) *errcode_ret = CL_MEM_OBJECT_ALLOCATION_FAILURE;
    return nullptr;
  }
  return real(context, flags, size, host_ptr, errcode_ret);
}

// Only the fused update kernels count, so a test can fail the k-th
// parameter's update whatever ran before it.
CL_API_ENTRY cl_int CL_API_CALL clEnqueueNDRangeKernel(
    cl_command_queue queue, cl_kernel kernel, cl_uint work_dim, const size_t* global_work_offset,
    const size_t* global_work_size, const size_t* local_work_size, cl_uint num_events,
    const cl_event* wait_list, cl_event* event) {
  using Fn = decltype(&clEnqueueNDRangeKernel);
  static const Fn real = loader_function<Fn>("clEnqueueNDRangeKernel");
  if (kernel_name(kernel) == "optimizer_update") {
    updates_began = true;
    if (updates.fails_now()) return CL_OUT_OF_RESOURCES;
  }
  return real(queue, kernel, work_dim, global_work_offset, global_work_size, local_work_size,
              num_events, wait_list, event);
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueWriteBuffer(cl_command_queue queue, cl_mem buffer,
                                                     cl_bool blocking, size_t offset, size_t size,
                                                     const void* ptr, cl_uint num_events,
                                                     const cl_event* wait_list, cl_event* event) {
  using Fn = decltype(&clEnqueueWriteBuffer);
  static const Fn real = loader_function<Fn>("clEnqueueWriteBuffer");
  if (writes.fails_now()) return CL_OUT_OF_RESOURCES;
  if (blocking) ++waits;
  return real(queue, buffer, blocking, offset, size, ptr, num_events, wait_list, event);
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueReadBuffer(cl_command_queue queue, cl_mem buffer,
                                                    cl_bool blocking, size_t offset, size_t size,
                                                    void* ptr, cl_uint num_events,
                                                    const cl_event* wait_list, cl_event* event) {
  using Fn = decltype(&clEnqueueReadBuffer);
  static const Fn real = loader_function<Fn>("clEnqueueReadBuffer");
  if (updates_began && update_reads.fails_now()) return CL_OUT_OF_RESOURCES;
  if (blocking) ++waits;
  return real(queue, buffer, blocking, offset, size, ptr, num_events, wait_list, event);
}

CL_API_ENTRY cl_int CL_API_CALL clFinish(cl_command_queue queue) {
  using Fn = decltype(&clFinish);
  static const Fn real = loader_function<Fn>("clFinish");
  ++waits;
  return real(queue);
}

CL_API_ENTRY cl_int CL_API_CALL clWaitForEvents(cl_uint num_events, const cl_event* events) {
  using Fn = decltype(&clWaitForEvents);
  static const Fn real = loader_function<Fn>("clWaitForEvents");
  ++waits;
  return real(num_events, events);
}

CL_API_ENTRY void* CL_API_CALL clEnqueueMapBuffer(cl_command_queue queue, cl_mem buffer,
                                                  cl_bool blocking, cl_map_flags flags,
                                                  size_t offset, size_t size, cl_uint num_events,
                                                  const cl_event* wait_list, cl_event* event,
                                                  cl_int* errcode_ret) {
  using Fn = decltype(&clEnqueueMapBuffer);
  static const Fn real = loader_function<Fn>("clEnqueueMapBuffer");
  if (blocking) ++waits;
  return real(queue, buffer, blocking, flags, offset, size, num_events, wait_list, event,
              errcode_ret);
}

}  // extern "C"

namespace lowbit {
namespace {

using testing::Kind;
using namespace testing::faults;

// A backend of its own on the first OpenCL device (not the process-wide
// shared one), so every kernel variant a test needs is built in that test.
// `discrete`: told that the device does not share the host's memory, the
// backend keeps its own device buffers and copies parameters, gradients and
// states in and out, as on a discrete GPU.
std::shared_ptr<kernels::Backend> fresh_opencl(bool discrete) {
  auto shared = testing::opencl_or_null();
  if (!shared) return nullptr;
  kernels::opencl::DeviceInfo info =
      static_cast<kernels::opencl::OpenClBackend&>(*shared).context().info();
  if (discrete) info.host_unified = false;
  return std::make_shared<kernels::opencl::OpenClBackend>(info);
}

// Every test runs twice on the device (PoCL in CI): with the tensors' host
// memory used in place (zero-copy, as PoCL and integrated GPUs are used),
// and through device buffers (as a discrete GPU is used).
class OpenClFaults : public ::testing::TestWithParam<bool> {
 protected:
  bool discrete() const { return GetParam(); }
  std::shared_ptr<kernels::Backend> fresh() const { return fresh_opencl(discrete()); }
  // Whether tensors' host memory is used in place: in the first mode, on a
  // device that shares the host's memory (PoCL; not a discrete GPU, where
  // both modes keep device buffers).
  bool in_place() const {
    auto shared = testing::opencl_or_null();
    return shared && !discrete() &&
           static_cast<kernels::opencl::OpenClBackend&>(*shared).context().info().host_unified;
  }
};

// What a failed step was doing: its error up to the device or the shape.
std::string what_failed(const std::string& message) {
  return message.substr(0, std::min(message.find(" on "), message.find(" (shape")));
}

INSTANTIATE_TEST_SUITE_P(Memory, OpenClFaults, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "DeviceBuffers" : "ZeroCopy";
                         });

// The case: the second parameter's kernel variant does not build (the
// step's third build, after the first parameter's variant and the program of
// the step's bookkeeping kernels). Before the fix, the first parameter was
// updated and every step count advanced.
TEST_P(OpenClFaults, AKernelThatDoesNotBuildInTheFirstStepChangesNothing) {
  auto backend = fresh();
  if (!backend) GTEST_SKIP() << "no OpenCL device (set LOWBIT_REQUIRE_OPENCL=1 to fail)";
  auto pa = make_params(), pb = clone(pa);
  auto a = make_adamw(pa, backend), twin = make_adamw(pb, backend);
  set_grads(pa, 0);
  set_grads(pb, 0);
  const int seen_before = builds.seen, failed_before = builds.failed;
  builds.arm(3);
  const std::string message = testing::message_of([&] { a->step(); });
  builds.disarm();
  EXPECT_EQ(builds.failed - failed_before, 1);
  EXPECT_EQ(builds.seen - seen_before, 3) << "clBuildProgram did not reach the injector";
  std::printf("%s\n", first_line(message).c_str());
  for (const char* needle :
       {"AdamW8bit: cannot prepare the update of parameter 1 of group 0", "opencl:",
        "building OpenCL program 'optimizer'", "CL_BUILD_PROGRAM_FAILURE", "Nothing was changed"})
    EXPECT_NE(message.find(needle), std::string::npos) << needle << " not in: " << message;
  expect_identical(*a, pa, *twin, pb, "after the failed step");
  // The same step again, now building: exactly the twin's first step.
  a->step();
  twin->step();
  expect_identical(*a, pa, *twin, pb, "after the first step");
}

// A later step that needs a new variant: a bfloat16 parameter frozen in the
// first step (no gradient) gets one in the second.
TEST_P(OpenClFaults, AKernelThatDoesNotBuildInALaterStepChangesNothing) {
  auto backend = fresh();
  if (!backend) GTEST_SKIP() << "no OpenCL device (set LOWBIT_REQUIRE_OPENCL=1 to fail)";
  auto pa = make_params(), pb = clone(pa);
  auto a = make_adamw(pa, backend), twin = make_adamw(pb, backend);
  set_grads(pa, 0, {2});
  set_grads(pb, 0, {2});
  a->step();
  twin->step();
  set_grads(pa, 1);
  set_grads(pb, 1);
  const int seen_before = builds.seen;
  builds.arm(1);
  const std::string message = testing::message_of([&] { a->step(); });
  builds.disarm();
  EXPECT_EQ(builds.seen - seen_before, 1) << "clBuildProgram did not reach the injector";
  std::printf("%s\n", first_line(message).c_str());
  for (const char* needle : {"cannot prepare the update of parameter 2 of group 0",
                             "CL_BUILD_PROGRAM_FAILURE", "Nothing was changed"})
    EXPECT_NE(message.find(needle), std::string::npos) << needle << " not in: " << message;
  expect_identical(*a, pa, *twin, pb, "after the failed second step");
  a->step();
  twin->step();
  expect_identical(*a, pa, *twin, pb, "after the second step");
}

// Every allocation of the first step in turn (the parameters', gradients' and
// states' buffers, the step buffers, code tables, scratch), until a step
// passes without reaching the failing one: each failure leaves no state behind,
// and the step that follows is exactly a fresh twin's first. A backend per
// run, since the backend keeps its code tables and scratch once made.
TEST_P(OpenClFaults, AnAllocationThatFailsInTheFirstStepChangesNothing) {
  if (!fresh()) GTEST_SKIP() << "no OpenCL device (set LOWBIT_REQUIRE_OPENCL=1 to fail)";
  const int host_before = failed_host_buffers;
  const int tried = fail_each_call_in_turn(
      buffers, [&] { return fresh(); },
      [](const std::string& message) {
        EXPECT_NE(message.find("CL_MEM_OBJECT_ALLOCATION_FAILURE"), std::string::npos) << message;
      },
      what_failed);
  const int host = failed_host_buffers - host_before;
  std::printf("of them host memory wrapped for tensors: %d\n", host);
  // Three parameters: each one's value, gradient and two states at least,
  // wrapped in place or in device buffers of their own.
  if (in_place()) {
    EXPECT_GE(host, 3 * 4);
  } else {
    EXPECT_EQ(host, 0);
    EXPECT_GE(tried, 3 * 4);
  }
}

// Every copy into the device of the first step in turn (parameters and
// gradients through device buffers, step counts, code tables, scratch): the
// copies come before anything changes, so each failure leaves nothing behind
// and the step that follows is exactly a fresh twin's first.
TEST_P(OpenClFaults, ACopyToTheDeviceThatFailsInTheFirstStepChangesNothing) {
  if (!fresh()) GTEST_SKIP() << "no OpenCL device (set LOWBIT_REQUIRE_OPENCL=1 to fail)";
  const int tried = fail_each_call_in_turn(
      writes, [&] { return fresh(); },
      [](const std::string& message) {
        for (const char* needle :
             {"clEnqueueWriteBuffer", "CL_OUT_OF_RESOURCES", "Nothing was changed"})
          EXPECT_NE(message.find(needle), std::string::npos) << needle << " not in: " << message;
      },
      what_failed);
  // Through device buffers: at least each parameter's value and gradient.
  EXPECT_GE(tried, in_place() ? 1 : 3 * 2);
}

// A step whose k-th call of `calls` (armed just before it) fails once the
// updates have begun. Returns false if the step passed (it made fewer
// calls). Otherwise: the error names the parameter j being updated and says
// the state is inconsistent; the parameters before j stepped, those after it
// did not, and j did exactly when `j_stepped` says; every step count
// advanced; step() refuses; and with the model and optimizer restored from
// the checkpoint taken before, the step is an undisturbed twin's.
bool expect_stops_until_load(const std::shared_ptr<kernels::Backend>& backend, Injection& calls,
                             int k, const std::string& error,
                             const std::function<bool(const std::string&)>& j_stepped) {
  auto pa = make_params(), pb = clone(pa);
  auto a = make_adamw(pa, backend), twin = make_adamw(pb, backend);
  set_grads(pa, 0);
  set_grads(pb, 0);
  a->step();
  twin->step();
  const std::string checkpoint = testing::save_to_string(*a);
  const std::vector<torch::Tensor> weights = clone(pa);

  set_grads(pa, 1);
  set_grads(pb, 1);
  const int failed_before = calls.failed;
  updates_began = false;
  calls.arm(k);
  const std::string message = testing::message_of([&] { a->step(); });
  calls.disarm();
  if (calls.failed == failed_before) {
    EXPECT_EQ(message, "(no exception)");
    return false;
  }
  std::printf("%s\n", first_line(message).c_str());
  const std::string updating = "the step failed while updating parameter ";
  const size_t at = message.find(updating);
  if (at == std::string::npos) {
    ADD_FAILURE() << "no parameter named in: " << message;
    return true;
  }
  const size_t j = size_t(std::stoul(message.substr(at + updating.size())));
  for (const char* needle : {"AdamW8bit: ", "of group 0", "state is now inconsistent",
                             "from a checkpoint (load())"})
    EXPECT_NE(message.find(needle), std::string::npos) << needle << " not in: " << message;
  EXPECT_NE(message.find(error), std::string::npos) << error << " not in: " << message;
  // What the message says: the parameters before j stepped, those after it
  // did not, and every step count advanced.
  a->sync_state();
  for (size_t i = 0; i < pa.size(); ++i) {
    const bool stepped = i < j || (i == j && j_stepped(message));
    EXPECT_EQ(same_bits(pa[i], weights[i]), !stepped) << "parameter " << i << " of " << j;
    EXPECT_EQ(a->param_state(0, i)->step(), 2);
  }
  testing::expect_error_all([&] { a->step(); },
                            {"AdamW8bit: an earlier step failed midway (while updating parameter " +
                                 std::to_string(j) + " of group 0",
                             "restore the model and the optimizer from a checkpoint (load())"});
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_EQ(a->param_state(0, i)->step(), 2);

  // Restored from the checkpoint, the step is the twin's.
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < pa.size(); ++i) pa[i].copy_(weights[i]);
  }
  testing::load_from_string(*a, checkpoint);
  a->step();
  twin->step();
  expect_identical(*a, pa, *twin, pb, "after the restored step");
  return true;
}

// A device lost in the middle of the updates cannot be undone (the kernels
// update parameters and states in place, and the step counts have advanced):
// the step names the parameter and says so, the optimizer refuses to step
// again, and restoring a checkpoint resumes exactly as an undisturbed run.
// Here the second parameter's update kernel fails: it did not run.
TEST_P(OpenClFaults, ADeviceLostDuringTheUpdatesStopsTheOptimizerUntilLoad) {
  auto backend = fresh();
  if (!backend) GTEST_SKIP() << "no OpenCL device (set LOWBIT_REQUIRE_OPENCL=1 to fail)";
  const int seen_before = updates.seen;
  // The second parameter's kernel did not run: it did not step.
  const auto second_did_not_step = [](const std::string& message) {
    EXPECT_NE(message.find("parameter 1 of"), std::string::npos);
    return false;
  };
  EXPECT_TRUE(
      expect_stops_until_load(backend, updates, 2, "CL_OUT_OF_RESOURCES", second_did_not_step));
  EXPECT_GE(updates.seen - seen_before, 2) << "clEnqueueNDRangeKernel did not reach the injector";
}

// The same for each read of the updates in turn. The updates read nothing
// back (their rejected-block counts go into the flags on the device, their
// arguments and code tables are made there), so where the device uses the
// host's memory in place there is no read to fail; through device buffers
// each parameter's value is copied out after its kernel ran, and a failed
// copy leaves it updated on the device only.
TEST_P(OpenClFaults, ACopyFromTheDeviceThatFailsDuringTheUpdatesStopsTheOptimizerUntilLoad) {
  if (!fresh()) GTEST_SKIP() << "no OpenCL device (set LOWBIT_REQUIRE_OPENCL=1 to fail)";
  int tried = 0;
  for (int k = 1; k <= 50; ++k) {
    SCOPED_TRACE("failing read " + std::to_string(k));
    if (!expect_stops_until_load(fresh(), update_reads, k, "clEnqueueReadBuffer",
                                 [](const std::string&) { return false; }))
      break;
    ++tried;
  }
  std::printf("reads failed in turn: %d\n", tried);
  EXPECT_EQ(tried, in_place() ? 0 : 3);
}

// How often a later step (states, kernels and scratch made by the first) waits for the
// device, by the number of parameters. The step counts and percentile clipping's histories
// (make_adamw clips) are read in one batch and written in another, whatever the count; what
// grows with the parameters is, in place, the wait after each kernel that used a tensor's
// memory (the gradient check, the update: OpenCL leaves that memory undefined for the host
// until it is mapped), and through device buffers each parameter's copies in and out. A step
// that read and wrote each step count and history on its own (as until 2026-12-06) waits 6
// and 7 times per parameter.
TEST_P(OpenClFaults, AStepWaitsForTheDeviceAFixedNumberOfTimesPerParameter) {
  if (!fresh()) GTEST_SKIP() << "no OpenCL device (set LOWBIT_REQUIRE_OPENCL=1 to fail)";
  const auto waits_of_a_step = [&](int64_t count) {
    torch::manual_seed(3);
    std::vector<torch::Tensor> params;
    for (int64_t i = 0; i < count; ++i)
      params.push_back((torch::randn({300 + 100 * i}) * 0.1).set_requires_grad(true));
    auto opt = make_adamw(params, fresh());
    set_grads(params, 0);
    opt->step();
    set_grads(params, 1);
    const int before = waits;
    opt->step();
    return waits - before;
  };
  const int w3 = waits_of_a_step(3), w6 = waits_of_a_step(6), w12 = waits_of_a_step(12);
  std::printf("waits of a step: %d with 3 parameters, %d with 6, %d with 12\n", w3, w6, w12);
  // The same number for each parameter added, and no more than those above.
  EXPECT_EQ(w12 - w6, 2 * (w6 - w3));
  EXPECT_EQ((w6 - w3) % 3, 0);
  EXPECT_LE((w6 - w3) / 3, in_place() ? 2 : 3);
}

// A device with OpenCL's minimum of local memory (32 KiB): the 4-bit matmul's
// tile classes that need about 36 KiB (batches up to 32 rows and above 128)
// give way to the 64 x 64 class. K is 256 deep in both directions, so no
// tile class splits it, and every output adds its products in the order of
// k whatever its tile: the outputs are bit for bit those of the device as it
// is (whose own outputs Matmul4bit checks against a double reference).
TEST(OpenClLocalMemory, TheMatmulFallsBackToTilesThatFit) {
  auto as_is = fresh_opencl(false);
  if (!as_is) GTEST_SKIP() << "no OpenCL device (set LOWBIT_REQUIRE_OPENCL=1 to fail)";
  reported_local_mem = 32 * 1024;
  auto small = fresh_opencl(false);
  reported_local_mem = 0;
  const size_t out = 256, in = 256, n = out * in, blocks = kernels::num_blocks(n, 64);
  std::mt19937 rng(5);
  std::vector<uint8_t> packed(kernels::packed_4bit_bytes(n)), codes(blocks);
  for (auto& b : packed) b = uint8_t(rng());
  for (auto& b : codes) b = uint8_t(rng());
  const auto map = kernels::dynamic_map(true);
  const std::vector<float> nested_code(map.begin(), map.end());
  const std::vector<float> nested(kernels::num_blocks(blocks, 256), 0.02f);
  struct Case {
    size_t m;
    kernels::DType dtype;
    bool forward;
  };
  std::vector<Case> cases;
  for (size_t m : {16, 160})
    for (kernels::DType dtype : {kernels::DType::F32, kernels::DType::BF16})
      for (bool forward : {true, false}) cases.push_back({m, dtype, forward});
  // Every case's y = x W^T or dx = dy W on one backend, as bytes; the tile
  // classes it built are in built_options (a backend builds each variant once).
  const auto outputs = [&](kernels::Backend& be) {
    built_options.clear();
    const auto pb = testing::upload(be, packed), cb = testing::upload(be, codes);
    const auto mb = testing::upload(be, nested_code), nb = testing::upload(be, nested);
    kernels::Weight4bit w;
    w.packed = pb.get();
    w.absmax = cb.get();
    w.nested_code = mb.get();
    w.nested_absmax = nb.get();
    w.out_features = out;
    w.in_features = in;
    std::vector<std::vector<uint8_t>> y;
    for (const Case& c : cases) {
      torch::manual_seed(int(c.m));
      const size_t k = c.forward ? in : out, cols = c.forward ? out : in;
      const torch::Tensor xt =
          torch::randn({int64_t(c.m), int64_t(k)})
              .to(c.dtype == kernels::DType::F32 ? torch::kFloat32 : torch::kBFloat16)
              .contiguous();
      const auto xb = be.allocate(size_t(xt.nbytes()));
      be.write(*xb, xt.data_ptr(), size_t(xt.nbytes()));
      const size_t y_bytes = c.m * cols * kernels::dtype_size(c.dtype);
      const auto yb = be.allocate(y_bytes);
      if (c.forward)
        be.gemm_4bit(*xb, c.m, w, nullptr, *yb, c.dtype);
      else
        be.gemm_4bit_input_grad(*xb, c.m, w, *yb, c.dtype);
      y.push_back(testing::download<uint8_t>(be, *yb, y_bytes));
    }
    return y;
  };
  const auto built = [&](const std::string& tiles) {
    return std::any_of(built_options.begin(), built_options.end(),
                       [&](const std::string& o) { return o.find(tiles) != std::string::npos; });
  };
  const std::string few_rows = "-DLB_WM=4 -DLB_WN=64 -DLB_TM=4 -DLB_TN=4",
                    mid = "-DLB_WM=16 -DLB_WN=16 -DLB_TM=4 -DLB_TN=4",
                    many_rows = "-DLB_WM=16 -DLB_WN=16 -DLB_TM=8 -DLB_TN=8";
  const auto expected = outputs(*as_is);
  EXPECT_TRUE(built(few_rows) && built(many_rows) && !built(mid))
      << "the device as it is did not build its own tile classes";
  const auto got = outputs(*small);
  EXPECT_TRUE(built(mid) && !built(few_rows) && !built(many_rows))
      << "the device with 32 KiB built other tile classes than 64 x 64";
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_TRUE(expected[i] == got[i])
        << "the outputs differ: m " << cases[i].m
        << (cases[i].forward ? ", forward, " : ", input gradient, ")
        << kernels::dtype_name(cases[i].dtype);
}

}  // namespace
}  // namespace lowbit
