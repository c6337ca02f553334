// Quantize / dequantize throughput on 64M float32 values against a memcpy of
// the same input (256 MiB) in the same run: CPU with 1 and all threads, and the
// OpenCL device (kernel only: buffers stay on the device) when one is present.
#include <omp.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/ratio_reporter.h"
#include "kernels/backend.h"

namespace lowbit::bench {
namespace {

using kernels::Backend;
using kernels::Buffer;
using kernels::DType;

size_t g_n = size_t(64) << 20;  // LOWBIT_BENCH_N overrides (e.g. for a quick run)

// Input and output buffers on one backend, filled once outside the timing.
struct Workspace {
  std::unique_ptr<Buffer> x, copy_dst, out, code, absmax, codes, packed;
};

Workspace& workspace(Backend& be) {
  static std::map<Backend*, Workspace> all;
  Workspace& w = all[&be];
  if (w.x) return w;
  const size_t n = g_n;
  std::vector<float> host(n);
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  for (auto& v : host) v = normal(rng);
  w.x = be.allocate(n * 4);
  be.write(*w.x, host.data(), n * 4);
  w.copy_dst = be.allocate(n * 4);
  w.out = be.allocate(n * 4);
  const auto map = kernels::dynamic_map(true);
  w.code = be.allocate(256 * 4);
  be.write(*w.code, map.data(), 256 * 4);
  w.absmax = be.allocate(kernels::num_blocks(n, 32) * 4);
  w.codes = be.allocate(n);
  w.packed = be.allocate(kernels::packed_4bit_bytes(n));
  // Touch every output page once so first-touch faults stay out of timings.
  be.copy(*w.x, *w.copy_dst, n * 4);
  be.copy(*w.x, *w.out, n * 4);
  be.quantize_blockwise(*w.x, DType::F32, n, 256, *w.code, *w.absmax, *w.codes);
  be.quantize_4bit(*w.x, DType::F32, n, 64, kernels::Format4::NF4, *w.absmax, *w.packed);
  be.synchronize();
  return w;
}

enum class Op { Memcpy, Quantize8, Dequantize8, QuantizeNF4, DequantizeNF4 };

void run_op(Backend& be, Workspace& w, Op op) {
  const size_t n = g_n;
  switch (op) {
    case Op::Memcpy: be.copy(*w.x, *w.copy_dst, n * 4); break;
    case Op::Quantize8:
      be.quantize_blockwise(*w.x, DType::F32, n, 256, *w.code, *w.absmax, *w.codes);
      break;
    case Op::Dequantize8:
      be.dequantize_blockwise(*w.codes, *w.absmax, *w.code, n, 256, *w.out, DType::F32);
      break;
    case Op::QuantizeNF4:
      be.quantize_4bit(*w.x, DType::F32, n, 64, kernels::Format4::NF4, *w.absmax, *w.packed);
      break;
    case Op::DequantizeNF4:
      be.dequantize_4bit(*w.packed, *w.absmax, n, 64, kernels::Format4::NF4, *w.out, DType::F32);
      break;
  }
}

// Bytes an op must move at least: its inputs read once, its outputs written once.
double bytes_moved(Op op) {
  const double n = double(g_n);
  switch (op) {
    case Op::Memcpy: return 8 * n;
    case Op::Quantize8: return 4 * n + n + 4 * n / 256;
    case Op::Dequantize8: return n + 4 * n / 256 + 4 * n;
    case Op::QuantizeNF4: return 4 * n + n / 2 + 4 * n / 64;
    case Op::DequantizeNF4: return n / 2 + 4 * n / 64 + 4 * n;
  }
  return 0;
}

void register_all(const std::string& group, std::shared_ptr<Backend> be, int threads) {
  const std::pair<const char*, Op> ops[] = {{"memcpy", Op::Memcpy},
                                            {"quantize_8bit_b256", Op::Quantize8},
                                            {"dequantize_8bit_b256", Op::Dequantize8},
                                            {"quantize_nf4_b64", Op::QuantizeNF4},
                                            {"dequantize_nf4_b64", Op::DequantizeNF4}};
  for (auto [name, op] : ops) {
    benchmark::RegisterBenchmark((std::string(name) + "/" + group).c_str(),
                                 [be, threads, op = op](benchmark::State& state) {
                                   if (threads > 0) omp_set_num_threads(threads);
                                   Workspace& w = workspace(*be);
                                   for (auto _ : state) {
                                     run_op(*be, w, op);
                                     be->synchronize();
                                   }
                                   state.counters["bytes"] = bytes_moved(op);
                                   state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(g_n));
                                 })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(1.0);
  }
}

}  // namespace
}  // namespace lowbit::bench

int main(int argc, char** argv) {
  using namespace lowbit;
  if (const char* n = std::getenv("LOWBIT_BENCH_N")) bench::g_n = std::stoull(n);
  benchmark::Initialize(&argc, argv);
  const int all = omp_get_max_threads();
  const std::shared_ptr<kernels::Backend> cpu = kernels::make_backend({"cpu", -1, ""});
  bench::register_all("cpu/threads:1", cpu, 1);
  if (all > 1) bench::register_all("cpu/threads:" + std::to_string(all), cpu, all);
  const auto devices = kernels::opencl_devices();
  for (size_t i = 0; i < devices.size(); ++i) {
    kernels::BackendOptions o;
    o.kind = "opencl";
    o.device_index = int(i);
    bench::register_all("opencl:" + std::to_string(i), kernels::make_backend(o), all);
    std::printf("opencl:%zu = %s\n", i, devices[i].c_str());
  }
  std::printf("n = %zu float32 values (%zu MiB)\n", bench::g_n, bench::g_n * 4 >> 20);
  bench::RatioReporter reporter("memcpy");
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
