// Linear4bit forward (NF4, block 64, double quantization) against a float32
// linear layer of the same shape in the same run: torch::linear (the drop-in
// baseline; Debian's libtorch calls the reference BLAS) and Eigen's float32
// GEMM/GEMV split over the same threads (a tuned-BLAS class baseline).
// Shapes are LLaMA-7B's [out x in] = 4096 x 4096 (attention) and 11008 x 4096
// (MLP up-projection), batch 1 (token generation) and 64 (prefill /
// training), 1 thread and all threads; the OpenCL device when present.
// Before the timings it prints the weight bytes per parameter of each layout.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench/linear_common.h"
#include "bench/ratio_reporter.h"
#include "lora/linear4bit.h"

namespace lowbit::bench {
namespace {

const Shape kShapes[] = {{4096, 4096}, {11008, 4096}};
const int64_t kBatches[] = {1, 64};

std::vector<lora::Linear4bit>& quantized(const Shape& s,
                                         const std::shared_ptr<kernels::Backend>& backend) {
  static std::map<std::string, std::vector<lora::Linear4bit>> all;  // by shape and backend
  std::vector<lora::Linear4bit>& q = all[s.name() + "/" + (backend ? backend->name() : "cpu")];
  const std::vector<torch::Tensor>& weights = float_weights(s);
  if (q.empty()) {
    torch::nn::Linear linear(torch::nn::LinearOptions(s.in, s.out).bias(false));
    const auto options = lora::Linear4bitOptions().backend(backend);
    while (q.empty() || q.size() < size_t(copies_for(double(q[0]->storage().total_bytes())))) {
      torch::NoGradGuard no_grad;
      linear->weight.copy_(weights[q.size() % weights.size()]);
      q.emplace_back(linear, options);
    }
  }
  return q;
}

enum class Op { TorchLinear, EigenLinear, Linear4bit };

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
        std::vector<lora::Linear4bit>* q = op == Op::Linear4bit ? &quantized(s, backend) : nullptr;
        size_t i = 0;
        for (auto _ : state) {
          switch (op) {
            case Op::TorchLinear: y = torch::linear(x, w[i++ % w.size()]); break;
            case Op::EigenLinear: eigen_linear(x, w[i++ % w.size()], y); break;
            case Op::Linear4bit: y = (*q)[i++ % q->size()]->forward(x); break;
          }
          benchmark::DoNotOptimize(y.data_ptr());
        }
        // Weight bytes read per call (the memory-bound figure at batch 1).
        state.counters["bytes"] = op == Op::Linear4bit ? double((*q)[0]->storage().total_bytes())
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
      if (opencl) register_op("linear4bit_nf4_opencl", Op::Linear4bit, s, batch, threads, opencl);
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
  bench::register_all(1, all == 1 ? opencl : nullptr);
  if (all > 1) bench::register_all(all, opencl);
  bench::RatioReporter reporter(std::vector<std::string>{"torch_linear_fp32", "eigen_linear_fp32"});
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
