// Linear4bit forward (NF4, block 64, double quantization) against a float32
// linear layer of the same shape in the same run: torch::linear (the drop-in
// baseline; Debian's libtorch calls the reference BLAS) and Eigen's float32
// GEMM/GEMV split over the same threads (a tuned-BLAS class baseline).
// Shapes are LLaMA-7B's [out x in] = 4096 x 4096 (attention) and 11008 x 4096
// (MLP up-projection), batch 1 (token generation) and 64 (prefill /
// training), 1 thread and all threads; the OpenCL device when present.
// At batch 1 also: linear4bit_nf4_int8, the same layers with
// Linear4bitOptions::int8_gemv (the approximate integer path; its error
// against the exact path is printed before the timings), and memcpy of 1
// GiB with the CPU backend's copy over the same threads, the bandwidth the
// batch-1 rows read their weights against ("bytes/s vs memcpy").
// Before the timings it prints the weight bytes per parameter of each layout.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench/linear_common.h"
#include "bench/ratio_reporter.h"
#include "kernels/backend.h"
#include "kernels/blas_core.h"
#include "lora/linear4bit.h"

namespace lowbit::bench {
namespace {

const Shape kShapes[] = {{4096, 4096}, {11008, 4096}};
const int64_t kBatches[] = {1, 64};

std::vector<lora::Linear4bit>& quantized(const Shape& s,
                                         const std::shared_ptr<kernels::Backend>& backend,
                                         bool int8_gemv = false) {
  // By shape, backend and path.
  static std::map<std::string, std::vector<lora::Linear4bit>> all;
  std::vector<lora::Linear4bit>& q = all[s.name() + "/" + (backend ? backend->name() : "cpu") +
                                         (int8_gemv ? "/int8" : "")];
  const std::vector<torch::Tensor>& weights = float_weights(s);
  if (q.empty()) {
    torch::nn::Linear linear(torch::nn::LinearOptions(s.in, s.out).bias(false));
    const auto options = lora::Linear4bitOptions().backend(backend).int8_gemv(int8_gemv);
    while (q.empty() || q.size() < size_t(copies_for(double(q[0]->storage().total_bytes())))) {
      torch::NoGradGuard no_grad;
      linear->weight.copy_(weights[q.size() % weights.size()]);
      q.emplace_back(linear, options);
    }
  }
  return q;
}

enum class Op { TorchLinear, EigenLinear, Linear4bit, Linear4bitInt8, Memcpy };

// 1 GiB each way: past the 300 MiB L3 of the GPU machine's Xeon.
constexpr int64_t kCopyFloats = int64_t(256) << 20;

void register_op(const std::string& name, Op op, const Shape& s, int64_t batch, int threads,
                 std::shared_ptr<kernels::Backend> backend) {
  const std::string group = linear_group(s, batch, threads);
  benchmark::RegisterBenchmark(
      (name + "/" + group).c_str(),
      [=](benchmark::State& state) {
        omp_set_num_threads(threads);
        torch::set_num_threads(threads);
        torch::NoGradGuard no_grad;
        const torch::Tensor x = torch::randn({batch, s.in});
        const std::vector<torch::Tensor>& w = float_weights(s);
        torch::Tensor y = torch::empty({batch, s.out});
        const bool four_bit = op == Op::Linear4bit || op == Op::Linear4bitInt8;
        std::vector<lora::Linear4bit>* q =
            four_bit ? &quantized(s, backend, op == Op::Linear4bitInt8) : nullptr;
        torch::Tensor src, dst;
        std::unique_ptr<kernels::Buffer> from, to;
        const size_t copy_bytes = size_t(kCopyFloats) * sizeof(float);
        if (op == Op::Memcpy) {
          src = torch::randn({kCopyFloats});
          dst = torch::empty({kCopyFloats});
          const auto host = kernels::Location::host();
          from = kernels::cpu_backend().wrap(src.data_ptr(), copy_bytes, host);
          to = kernels::cpu_backend().wrap(dst.data_ptr(), copy_bytes, host);
          kernels::cpu_backend().copy(*from, *to, copy_bytes);  // first touch, untimed
        }
        size_t i = 0;
        for (auto _ : state) {
          switch (op) {
            case Op::TorchLinear: y = torch::linear(x, w[i++ % w.size()]); break;
            case Op::EigenLinear: eigen_linear(x, w[i++ % w.size()], y); break;
            case Op::Linear4bit:
            case Op::Linear4bitInt8: y = (*q)[i++ % q->size()]->forward(x); break;
            case Op::Memcpy: kernels::cpu_backend().copy(*from, *to, copy_bytes); break;
          }
          benchmark::DoNotOptimize(y.data_ptr());
        }
        // Bytes read per call: the weight's (the memory-bound figure at batch
        // 1), or the copy's read and write.
        state.counters["bytes"] = four_bit         ? double((*q)[0]->storage().total_bytes())
                                  : op == Op::Memcpy ? 2.0 * double(copy_bytes)
                                                     : 4.0 * double(s.in * s.out);
      })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MinTime(0.5);
}

// The OpenCL rows share the CPU group of the same thread count, so they get
// ratios against the same float32 baselines (PoCL runs on the same cores).
void register_all(int threads, std::shared_ptr<kernels::Backend> opencl) {
  for (const Shape& s : kShapes)
    for (int64_t batch : kBatches) {
      register_op("torch_linear_fp32", Op::TorchLinear, s, batch, threads, nullptr);
      register_op("eigen_linear_fp32", Op::EigenLinear, s, batch, threads, nullptr);
      register_op("linear4bit_nf4", Op::Linear4bit, s, batch, threads, nullptr);
      if (batch == 1) {
        register_op("linear4bit_nf4_int8", Op::Linear4bitInt8, s, batch, threads, nullptr);
        register_op("memcpy", Op::Memcpy, s, batch, threads, nullptr);
      }
      if (opencl) register_op("linear4bit_nf4_opencl", Op::Linear4bit, s, batch, threads, opencl);
    }
}

// The int8 path's error against the exact one, per shape, on normal x:
// |y_int8 - y| relative to |y| (L2 over the outputs), and the largest
// |y_int8 - y| relative to the largest |y|.
void print_int8_error() {
  std::printf("linear4bit_nf4_int8 against linear4bit_nf4 (x ~ N(0, 1), batch 1):\n");
  torch::NoGradGuard no_grad;
  for (const Shape& s : kShapes) {
    const torch::Tensor x = torch::randn({1, s.in});
    const torch::Tensor y = quantized(s, nullptr)[0]->forward(x);
    const torch::Tensor y8 = quantized(s, nullptr, true)[0]->forward(x);
    std::printf("  %-10s relative L2 error %.2e, largest error / largest |y| %.2e\n",
                s.name().c_str(), ((y8 - y).norm() / y.norm()).item<double>(),
                ((y8 - y).abs().max() / y.abs().max()).item<double>());
  }
}

void print_weight_bytes() {
  std::printf("weight bytes per parameter (payload = codes + scales; total adds the codebooks):\n");
  for (const Shape& s : kShapes) {
    const auto r = quantized(s, nullptr)[0]->storage();
    const double n = double(s.in) * double(s.out);
    std::printf("  %-10s float32 %.4f   nf4 payload %.4f (%.3f bits)   nf4 total %.4f\n",
                s.name().c_str(), 4.0, double(r.payload_bytes()) / n, r.payload_bits_per_param(),
                double(r.total_bytes()) / n);
  }
}

}  // namespace
}  // namespace lowbit::bench

int main(int argc, char** argv) {
  // torch's fp32 baselines with the widest kernels the process's OpenBLAS has for this CPU.
  lowbit::kernels::reload_with_wider_blas(argv);
  using namespace lowbit;
  benchmark::Initialize(&argc, argv);
  const int all = omp_get_max_threads();
  std::shared_ptr<kernels::Backend> opencl;
  if (!kernels::opencl_devices().empty() && !std::getenv("LOWBIT_BENCH_NO_OPENCL")) {
    opencl = kernels::make_backend({"opencl", 0, ""});
    std::printf("linear4bit_nf4_opencl: %s, end to end (x and y cross per call; the weight "
                "stays on the device)\n",
                opencl->name().c_str());
  }
  bench::print_weight_bytes();
  bench::print_int8_error();
  bench::register_all(1, all == 1 ? opencl : nullptr);
  if (all > 1) bench::register_all(all, opencl);
  bench::RatioReporter reporter(
      std::vector<std::string>{"torch_linear_fp32", "eigen_linear_fp32", "memcpy"});
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
