// The race check of the CPU backend's OpenMP kernels that runs everywhere:
// each kernel's results must be the same bits whatever the thread count. A
// data race (two threads writing one block, a reduction split differently) or
// a result that depends on how the work was shared shows up as a difference
// between 1, 2, 3 and 8 threads. Eight threads on two cores also interleave
// the threads in ways a 1:1 mapping would not. ThreadSanitizer with LLVM's
// OpenMP and its Archer tool runs the same kernels in scripts/tsan.sh.
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/backend.h"
#include "tests/kernels/backends.h"
#include "tests/kernels/optimizer_reference.h"

namespace lowbit {
namespace {

using kernels::Backend;
using kernels::DType;
using kernels::Format4;
using testing::download;
using testing::upload;

// Thread counts tried; 1 is the reference.
constexpr int kThreadCounts[] = {1, 2, 3, 8};

// Restores the OpenMP thread count a test changed.
class ThreadCount {
 public:
  ThreadCount() : saved_(omp_get_max_threads()) {}
  ~ThreadCount() { omp_set_num_threads(saved_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int saved_;
};

std::vector<float> normal_values(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// Runs `run` (returning every output's bytes) at each thread count and
// expects the bytes of the single-threaded run.
template <typename Run>
void expect_same_bits_at_every_thread_count(const std::string& what, Run&& run) {
  ThreadCount restore;
  omp_set_num_threads(1);
  const std::vector<uint8_t> reference = run();
  ASSERT_FALSE(reference.empty()) << what;
  for (const int threads : kThreadCounts) {
    omp_set_num_threads(threads);
    // Several runs: a race need not lose on the first one.
    for (int repeat = 0; repeat < 3; ++repeat) {
      EXPECT_EQ(run(), reference) << what << " with " << threads << " threads differs";
    }
  }
}

template <typename T>
void append(std::vector<uint8_t>& out, const std::vector<T>& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  out.insert(out.end(), p, p + v.size() * sizeof(T));
}

// Sizes with a short last block, and more blocks than any thread count.
constexpr size_t kElements = 64 * 1000 + 37;

TEST(ThreadCount, QuantizersGiveTheSameBits) {
  Backend& cpu = kernels::cpu_backend();
  const std::vector<float> x = normal_values(kElements, 1);
  const auto xb = upload(cpu, x);
  const auto code = upload(cpu, testing::dynamic_map(true));
  for (const int blocksize : {64, 256, 4096}) {
    const size_t nb = kernels::num_blocks(kElements, blocksize);
    expect_same_bits_at_every_thread_count("quantize_blockwise/" + std::to_string(blocksize), [&] {
      auto absmax = cpu.allocate(nb * sizeof(float));
      auto codes = cpu.allocate(kElements);
      auto back = cpu.allocate(kElements * sizeof(float));
      cpu.quantize_blockwise(*xb, DType::F32, kElements, blocksize, *code, *absmax, *codes);
      cpu.dequantize_blockwise(*codes, *absmax, *code, kElements, blocksize, *back, DType::F32);
      std::vector<uint8_t> out;
      append(out, download<float>(cpu, *absmax, nb));
      append(out, download<uint8_t>(cpu, *codes, kElements));
      append(out, download<float>(cpu, *back, kElements));
      return out;
    });
    for (const Format4 format : {Format4::NF4, Format4::FP4}) {
      expect_same_bits_at_every_thread_count("quantize_4bit/" + std::to_string(blocksize), [&] {
        const size_t bytes = kernels::packed_4bit_bytes(kElements);
        auto absmax = cpu.allocate(nb * sizeof(float));
        auto packed = cpu.allocate(bytes);
        auto back = cpu.allocate(kElements * sizeof(float));
        cpu.quantize_4bit(*xb, DType::F32, kElements, blocksize, format, *absmax, *packed);
        cpu.dequantize_4bit(*packed, *absmax, kElements, blocksize, format, *back, DType::F32);
        std::vector<uint8_t> out;
        append(out, download<float>(cpu, *absmax, nb));
        append(out, download<uint8_t>(cpu, *packed, bytes));
        append(out, download<float>(cpu, *back, kElements));
        return out;
      });
    }
  }
}

TEST(ThreadCount, MatmulsGiveTheSameBits) {
  Backend& cpu = kernels::cpu_backend();
  constexpr size_t kOut = 96, kIn = 320;
  const std::vector<float> weight = normal_values(kOut * kIn, 2);
  const auto wb = upload(cpu, weight);
  const size_t nb = kernels::num_blocks(kOut * kIn, 64);
  auto absmax = cpu.allocate(nb * sizeof(float));
  auto packed = cpu.allocate(kernels::packed_4bit_bytes(kOut * kIn));
  cpu.quantize_4bit(*wb, DType::F32, kOut * kIn, 64, Format4::NF4, *absmax, *packed);
  kernels::Weight4bit w4;
  w4.packed = packed.get();
  w4.absmax = absmax.get();
  w4.out_features = kOut;
  w4.in_features = kIn;
  const auto bias = upload(cpu, normal_values(kOut, 3));

  std::vector<int8_t> codes(kOut * kIn);
  std::vector<float> scale(kOut);
  std::vector<int32_t> row_sums(kOut, 0);
  std::mt19937 rng(4);
  for (size_t o = 0; o < kOut; ++o) {
    scale[o] = 0.5f + float(o % 7);
    for (size_t i = 0; i < kIn; ++i) {
      codes[o * kIn + i] = int8_t(int(rng() % 255) - 127);
      row_sums[o] += codes[o * kIn + i];
    }
  }
  const auto cb = upload(cpu, codes), sb = upload(cpu, scale), rb = upload(cpu, row_sums);
  const kernels::WeightInt8 w8{cb.get(), sb.get(), rb.get(), kOut, kIn};

  // m = 1 takes the gemv path, the others the tiled GEMM.
  for (const size_t m : {size_t(1), size_t(5), size_t(67)}) {
    const auto x = upload(cpu, normal_values(m * kIn, 5));
    const auto dy = upload(cpu, normal_values(m * kOut, 6));
    expect_same_bits_at_every_thread_count("matmuls/m=" + std::to_string(m), [&] {
      auto y4 = cpu.allocate(m * kOut * sizeof(float));
      auto dx = cpu.allocate(m * kIn * sizeof(float));
      auto y8 = cpu.allocate(m * kOut * sizeof(float));
      cpu.gemm_4bit(*x, m, w4, bias.get(), *y4, DType::F32);
      cpu.gemm_4bit_input_grad(*dy, m, w4, *dx, DType::F32);
      cpu.gemm_int8(*x, m, w8, bias.get(), *y8);
      std::vector<uint8_t> out;
      append(out, download<float>(cpu, *y4, m * kOut));
      append(out, download<float>(cpu, *dx, m * kIn));
      append(out, download<float>(cpu, *y8, m * kOut));
      return out;
    });
  }
}

TEST(ThreadCount, OptimizerStepsGiveTheSameBits) {
  Backend& cpu = kernels::cpu_backend();
  for (const auto& c : testing::cases()) {
    for (const bool quantized : {true, false}) {
      const testing::Operands o =
          testing::make_operands(c, DType::F32, quantized, kElements, 256, 7);
      expect_same_bits_at_every_thread_count(c.name + (quantized ? "/8bit" : "/32bit"), [&] {
        testing::Uploaded u(cpu, c, o);
        const kernels::UpdateNorms norms = cpu.optimizer_update_norms(u.op, testing::make_args(c));
        const kernels::GradientStats stats = cpu.gradient_stats(*u.op.grad, DType::F32, o.n(), 256);
        const size_t rejected = cpu.optimizer_update(u.op, testing::make_args(c));
        const testing::Result r = u.download_all(cpu, o);
        std::vector<uint8_t> out;
        append(out, r.param);
        append(out, r.codes1);
        append(out, r.codes2);
        append(out, r.absmax1);
        append(out, r.absmax2);
        append(out, r.state1);
        append(out, r.state2);
        append(out, std::vector<double>{norms.update_sq, norms.param_sq, stats.sum_sq,
                                        double(rejected)});
        return out;
      });
    }
  }
}

}  // namespace
}  // namespace lowbit
