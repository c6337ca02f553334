// Host memory running out during a CPU optimizer step. libtorch's CPU
// allocator is replaced, at a higher priority, by one that forwards to it and
// throws as it does when memory runs out on the call a test asks for; every
// allocation of the first step fails in turn, and each failure must leave the
// optimizer as it was.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "tests/optim/fault_test_util.h"
#include "tests/support/expect_error.h"

namespace lowbit {
namespace {

using namespace testing::faults;

// libtorch 2.3 made allocate() non-const and added copy_data().
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define LOWBIT_TORCH_ALLOCATOR_2_3 1
#else
#define LOWBIT_TORCH_ALLOCATOR_2_3 0
#endif

class FailingCpuAllocator final : public c10::Allocator {
 public:
  // Installed once per process, over the allocator libtorch had.
  static FailingCpuAllocator& installed() {
    static FailingCpuAllocator* allocator = [] {
      auto* a = new FailingCpuAllocator(c10::GetCPUAllocator());
      c10::SetCPUAllocator(a, /*priority=*/255);
      return a;
    }();
    return *allocator;
  }

  // Every allocation through libtorch's CPU allocator (mutable: allocate()
  // is const before libtorch 2.3).
  mutable Injection calls;

#if LOWBIT_TORCH_ALLOCATOR_2_3
  c10::DataPtr allocate(size_t bytes) override {
#else
  c10::DataPtr allocate(size_t bytes) const override {
#endif
    // The default allocator's words when posix_memalign fails.
    TORCH_CHECK(!calls.fails_now(), "DefaultCPUAllocator: not enough memory: you tried to allocate ",
                bytes, " bytes (injected by the test)");
    return real_->allocate(bytes);
  }
  c10::DeleterFnPtr raw_deleter() const override { return real_->raw_deleter(); }
#if LOWBIT_TORCH_ALLOCATOR_2_3
  void copy_data(void* dest, const void* src, size_t count) const override {
    std::memcpy(dest, src, count);
  }
#endif

 private:
  explicit FailingCpuAllocator(c10::Allocator* real) : real_(real) {}

  c10::Allocator* real_;
};

// Every host allocation of the first step in turn (the states' tensors and
// whatever else the step allocates through libtorch), until a step passes
// without reaching the failing one: each failure names the parameter, leaves
// no state behind, and the step that follows is exactly a fresh twin's first.
TEST(AllocationFaults, AHostAllocationThatFailsInTheFirstStepChangesNothing) {
  FailingCpuAllocator& allocator = FailingCpuAllocator::installed();
  const int tried = fail_each_call_in_turn(
      allocator.calls, [] { return std::shared_ptr<kernels::Backend>(); },
      [](const std::string& message) {
        for (const char* needle : {"AdamW8bit: ", "not enough memory", "Nothing was changed"})
          EXPECT_NE(message.find(needle), std::string::npos) << needle << " not in: " << message;
      },
      [](const std::string& message) {
        return first_line(message).substr(0, first_line(message).find(": DefaultCPUAllocator"));
      });
  // Three parameters, each with two states (8-bit ones with their absmax).
  EXPECT_GE(tried, 3 * 2);
}

// Once its states exist, a CPU step allocates nothing through libtorch: host
// memory running out later in training cannot reach the optimizer's step.
TEST(AllocationFaults, StepsAfterTheFirstAllocateNoHostMemory) {
  FailingCpuAllocator& allocator = FailingCpuAllocator::installed();
  auto params = make_params();
  auto opt = make_adamw(params, nullptr);
  set_grads(params, 0);
  const int before_first = allocator.calls.seen;
  opt->step();
  EXPECT_GT(allocator.calls.seen, before_first) << "the allocator was not reached";
  for (int t = 1; t < 4; ++t) {
    set_grads(params, t);
    const int before = allocator.calls.seen;
    opt->step();
    EXPECT_EQ(allocator.calls.seen, before) << "step " << t;
  }
}

}  // namespace
}  // namespace lowbit
