// GPU memory running out during a CUDA optimizer step. libtorch's caching
// allocator, which holds the states and (through kernels::set_cuda_allocator)
// the CUDA kernels' temporaries, is capped a little above what the test
// already holds (setMemoryFraction), so the first step meets libtorch's real
// "CUDA out of memory". The cap rises 2 MiB at a time until a step passes, so
// the failure lands in turn on each allocation that needs a new segment of
// the allocator: here the two 12 MiB state codes of the large parameter (the
// small allocations share a segment already reserved). Each failure must
// leave the optimizer as it was. Built with the CUDA backend only (it needs
// libtorch's CUDA headers); skipped without a device.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "optim/optim.h"
#include "tests/optim/fault_test_util.h"
#include "tests/support/cuda.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using testing::cuda_device;

// AdamW8bit's parameters and their first gradients, on the GPU: 8-bit states
// of 12.6M float32 elements (codes above 10 MiB, so each gets a segment of its
// own and a failure point of its own) and of 4200 bfloat16 ones, and 32-bit
// states of 37 elements (below min_8bit_size).
std::vector<torch::Tensor> make_params() {
  torch::manual_seed(11);
  std::vector<torch::Tensor> params = {
      (torch::randn({3072, 4096}) * 0.1).to(cuda_device()),
      (torch::randn({37}) * 0.1).to(cuda_device()),
      (torch::randn({4200}) * 0.1).to(cuda_device(), torch::kBFloat16)};
  torch::manual_seed(1000);
  for (auto& p : params) {
    p.set_requires_grad(true);
    p.mutable_grad() = (torch::randn(p.sizes()) * 0.01).to(p.device(), p.scalar_type());
  }
  return params;
}

// A twin of `params` on the same device, with the same gradients.
std::vector<torch::Tensor> twin_of(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> twin = testing::faults::clone(params);
  for (size_t i = 0; i < params.size(); ++i) twin[i].mutable_grad() = params[i].grad().clone();
  return twin;
}

TEST(CudaAllocationFaults, GpuMemoryRunningOutInTheFirstStepChangesNothing) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  using testing::faults::expect_identical;
  using testing::faults::make_adamw;
  const c10::DeviceIndex device = cuda_device().index();
  cudaDeviceProp props{};
  ASSERT_EQ(cudaGetDeviceProperties(&props, device), cudaSuccess);
  const double total = double(props.totalGlobalMem);
  const auto reserved = [&] {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device)
        .reserved_bytes[size_t(c10::CachingAllocator::StatType::AGGREGATE)]
        .current;
  };
  int failures = 0;
  bool passed = false;
  for (int64_t extra = 0; extra <= (int64_t(256) << 20) && !passed; extra += int64_t(2) << 20) {
    SCOPED_TRACE("cap: " + std::to_string(extra >> 20) + " MiB above the test's own memory");
    // The twin steps only with memory to spare, after the capped step.
    auto pa = make_params(), pb = twin_of(pa);
    auto a = make_adamw(pa, nullptr), twin = make_adamw(pb, nullptr);
    torch::cuda::synchronize();
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::setMemoryFraction((double(reserved()) + double(extra)) / total,
                                                       device);
    const std::string message = testing::message_of([&] { a->step(); });
    c10::cuda::CUDACachingAllocator::setMemoryFraction(1.0, device);
    if (message == "(no exception)") {
      passed = true;
    } else {
      ++failures;
      for (const char* needle : {"AdamW8bit: ", "out of memory", "Nothing was changed"})
        EXPECT_NE(message.find(needle), std::string::npos) << needle << " not in: " << message;
      expect_identical(*a, pa, *twin, pb, "after the failed step");
      std::printf("%3lld MiB: %s\n", static_cast<long long>(extra >> 20),
                  testing::faults::first_line(message).substr(0, 160).c_str());
      a->step();  // now with memory to spare: the fresh first step
    }
    twin->step();
    expect_identical(*a, pa, *twin, pb, "after the first step that passed");
  }
  EXPECT_TRUE(passed) << "no step passed with 256 MiB to spare";
  // Caps below the first state code's 12 MiB, then below both codes: at
  // least two failing runs before the one that passes.
  EXPECT_GE(failures, 2);
}

}  // namespace
}  // namespace lowbit
