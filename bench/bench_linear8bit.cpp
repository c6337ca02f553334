// Linear8bit (LLM.int8(): int8 weight + SCB, activations quantized per row,
// int8 products with int32 sums) against float32 linear layers of the same
// shape in the same run: torch::linear (the drop-in baseline; Debian's
// libtorch calls the reference BLAS) and Eigen's float32 GEMM/GEMV split
// over the same threads (a tuned-BLAS class baseline). Shapes are LLaMA-7B's
// [out x in] = 4096 x 4096 (attention) and 11008 x 4096 (MLP up-projection),
// batch 1 (token generation), 16 and 512 (prefill), 1 thread and all threads.
// Variants: the int8 path alone (threshold 0); threshold 6 on inputs with
// outlier columns (the float path engaged); use_cache (the dequantized
// float32 weight). Before the timings it prints bytes per parameter.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench/linear_common.h"
#include "bench/ratio_reporter.h"
#include "kernels/blas_core.h"
#include "kernels/cpu/isa_kernels.h"
#include "lora/linear8bit.h"

namespace lowbit::bench {
namespace {

const Shape kShapes[] = {{4096, 4096}, {11008, 4096}};
const int64_t kBatches[] = {1, 16, 512};

enum class Op { TorchLinear, EigenLinear, Int8, Int8Outliers, Int8Cache };

// The layers an int8 op rotates over: enough copies to exceed the cache by
// the bytes the op reads (the cache reads float32).
std::vector<lora::Linear8bit>& int8_layers(const Shape& s, Op op) {
  static std::map<std::string, std::vector<lora::Linear8bit>> all;  // by shape and op
  std::vector<lora::Linear8bit>& q = all[s.name() + "/" + std::to_string(int(op))];
  if (!q.empty()) return q;
  const std::vector<torch::Tensor>& weights = float_weights(s);
  const auto options = lora::Linear8bitOptions()
                           .threshold(op == Op::Int8Outliers ? 6.0 : 0.0)
                           .use_cache(op == Op::Int8Cache);
  const double bytes = op == Op::Int8Cache ? 4.0 * double(s.in * s.out) : double(s.in * s.out);
  torch::nn::Linear linear(torch::nn::LinearOptions(s.in, s.out).bias(false));
  for (int i = 0; i < copies_for(bytes); ++i) {
    {
      torch::NoGradGuard no_grad;
      linear->weight.copy_(weights[size_t(i) % weights.size()]);
    }
    q.emplace_back(linear, options);
  }
  return q;
}

// N(0, 1) activations; with outliers, six feature columns (LLM.int8()
// finds a handful per layer in large models, in most tokens) carry values of
// magnitude 10-40 in two rows of three.
torch::Tensor activations(int64_t batch, int64_t in, bool outliers) {
  torch::manual_seed(1);
  torch::Tensor x = torch::randn({batch, in});
  if (!outliers) return x;
  for (int64_t c : {7, 500, 1234, 2048, 3000, 4000})
    for (int64_t r = 0; r < batch; ++r)
      if (r % 3 != 2) x[r][c] = (c % 2 ? -1.0f : 1.0f) * (10.0f + float((r * 7 + c) % 31));
  return x;
}

void register_op(const std::string& name, Op op, const Shape& s, int64_t batch, int threads) {
  const std::string group = linear_group(s, batch, threads);
  benchmark::RegisterBenchmark(
      (name + "/" + group).c_str(),
      [=](benchmark::State& state) {
        omp_set_num_threads(threads);
        torch::set_num_threads(threads);
        torch::NoGradGuard no_grad;
        const torch::Tensor x = activations(batch, s.in, op == Op::Int8Outliers);
        const std::vector<torch::Tensor>& w = float_weights(s);
        torch::Tensor y = torch::empty({batch, s.out});
        const bool int8 = op != Op::TorchLinear && op != Op::EigenLinear;
        std::vector<lora::Linear8bit>* q = int8 ? &int8_layers(s, op) : nullptr;
        if (op == Op::Int8Cache)
          for (auto& layer : *q) layer->forward(x);  // builds the caches outside the timing
        size_t i = 0;
        for (auto _ : state) {
          switch (op) {
            case Op::TorchLinear: y = torch::linear(x, w[i++ % w.size()]); break;
            case Op::EigenLinear: eigen_linear(x, w[i++ % w.size()], y); break;
            default: y = (*q)[i++ % q->size()]->forward(x); break;
          }
          benchmark::DoNotOptimize(y.data_ptr());
        }
        // Weight bytes read per call (the memory-bound figure at batch 1).
        state.counters["bytes"] = int8 && op != Op::Int8Cache
                                      ? double((*q)[0]->storage().total_bytes())
                                      : 4.0 * double(s.in * s.out);
      })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MinTime(0.5);
}

void register_all(int threads) {
  for (const Shape& s : kShapes)
    for (int64_t batch : kBatches) {
      register_op("torch_linear_fp32", Op::TorchLinear, s, batch, threads);
      register_op("eigen_linear_fp32", Op::EigenLinear, s, batch, threads);
      register_op("linear8bit", Op::Int8, s, batch, threads);
      register_op("linear8bit_t6_outliers", Op::Int8Outliers, s, batch, threads);
      register_op("linear8bit_cache", Op::Int8Cache, s, batch, threads);
    }
}

void print_weight_bytes() {
  std::printf("int8 core: %s\n",
              kernels::cpu::int8_core_name(kernels::cpu::active_kernels().int8_cores().back()));
  std::printf("weight bytes per parameter (int8 = codes + SCB; the cache adds float32):\n");
  for (const Shape& s : kShapes) {
    const double n = double(s.in) * double(s.out);
    const double int8 = double(s.in * s.out + 4 * s.out) / n;
    std::printf("  %-10s float32 %.4f   int8 %.4f   int8 + cache %.4f\n", s.name().c_str(), 4.0,
                int8, int8 + 4.0);
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
  bench::print_weight_bytes();
  bench::register_all(1);
  if (all > 1) bench::register_all(all);
  bench::RatioReporter reporter(std::vector<std::string>{"torch_linear_fp32", "eigen_linear_fp32"});
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
