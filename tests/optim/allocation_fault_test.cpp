// Host memory running out during a CPU optimizer step. libtorch's CPU
// allocator is replaced, at a higher priority, by one that forwards to it and
// throws as it does when memory runs out on the call a test asks for; every
// allocation of the first step fails in turn, and each failure must leave the
// optimizer as it was.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
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
#define LOWBIT_ALLOCATE_CONST
#else
#define LOWBIT_ALLOCATE_CONST const
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

  // Fails the `k`-th allocation from now on.
  void arm(int k) { fail_at_ = seen_ + k; }
  void disarm() { fail_at_ = 0; }
  int seen() const { return seen_; }
  int failed() const { return failed_; }

  c10::DataPtr allocate(size_t bytes) LOWBIT_ALLOCATE_CONST override {
    const int call = ++seen_;
    if (fail_at_ != 0 && call == fail_at_) {
      ++failed_;
      // The default allocator's words when posix_memalign fails.
      TORCH_CHECK(false, "DefaultCPUAllocator: not enough memory: you tried to allocate ", bytes,
                  " bytes (injected by the test)");
    }
    return real_->allocate(bytes);
  }
  c10::DeleterFnPtr raw_deleter() const override { return real_->raw_deleter(); }
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  void copy_data(void* dest, const void* src, size_t count) const override {
    std::memcpy(dest, src, count);
  }
#endif

 private:
  explicit FailingCpuAllocator(c10::Allocator* real) : real_(real) {}

  c10::Allocator* real_;
  mutable std::atomic<int> seen_{0};
  std::atomic<int> fail_at_{0};
  mutable std::atomic<int> failed_{0};
};

// Every host allocation of the first step in turn (the states' tensors and
// whatever else the step allocates through libtorch), until a step passes
// without reaching the failing one: each failure names the parameter, leaves
// no state behind, and the step that follows is exactly a fresh twin's first.
TEST(AllocationFaults, AHostAllocationThatFailsInTheFirstStepChangesNothing) {
  FailingCpuAllocator& allocator = FailingCpuAllocator::installed();
  int tried = 0;
  std::map<std::string, int> raised_by;  // the messages' heads
  for (int k = 1;; ++k) {
    SCOPED_TRACE("failing allocation " + std::to_string(k));
    auto pa = make_params(), pb = clone(pa);
    auto a = make_adamw(pa, nullptr), twin = make_adamw(pb, nullptr);
    set_grads(pa, 0);
    set_grads(pb, 0);
    const int failed_before = allocator.failed();
    allocator.arm(k);
    const std::string message = testing::message_of([&] { a->step(); });
    allocator.disarm();
    if (allocator.failed() == failed_before) {
      EXPECT_EQ(message, "(no exception)");
      break;
    }
    ++tried;
    for (const char* needle : {"AdamW8bit: ", "not enough memory", "Nothing was changed"})
      EXPECT_NE(message.find(needle), std::string::npos) << needle << " not in: " << message;
    ++raised_by[first_line(message).substr(0, first_line(message).find(": DefaultCPUAllocator"))];
    expect_identical(*a, pa, *twin, pb, "after the failed step");
    a->step();
    twin->step();
    expect_identical(*a, pa, *twin, pb, "after the first step");
    ASSERT_LT(k, 400) << "the step never passed";
  }
  std::printf("host allocations failed in turn: %d\n", tried);
  for (const auto& [head, count] : raised_by) std::printf("  %2d x %s\n", count, head.c_str());
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
  const int before_first = allocator.seen();
  opt->step();
  EXPECT_GT(allocator.seen(), before_first) << "the allocator was not reached";
  for (int t = 1; t < 4; ++t) {
    set_grads(params, t);
    const int before = allocator.seen();
    opt->step();
    EXPECT_EQ(allocator.seen(), before) << "step " << t;
  }
}

}  // namespace
}  // namespace lowbit
