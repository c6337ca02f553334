// GPU benchmarks (builds with CUDA), each a ratio against its baseline from one
// run on one device. Groups:
//   "<optimizer>/<size>/cuda": a lowbit optimizer step on device-resident
//     tensors (the torch-level step, default SkipStep policy, gradient check
//     included; lowbit8_skipblocks without it; lowbit32: float32 states),
//     torch's fused AdamW (at::_fused_adamw_, torch.optim.AdamW(fused=True))
//     and a device copy of the parameter (the bandwidth roofline);
//   "linear/<out>x<in>/m<m>/<dtype>": Linear4bit NF4 with double quantization
//     (forward) against torch's CUDA linear in the same dtype; the weights of
//     several layers rotate so that neither reads from L2;
//     The OpenCL backend's gemv_4bit / gemm_4bit on the same GPU (NVIDIA's
//     OpenCL) join these groups as opencl_nf4 (kernel level, device buffers),
//     and its gemm_4bit_input_grad (batches above 1) as opencl_nf4_dx;
//   "fp32_peak/opencl": the same OpenCL device's float32 FMA peak, from a
//     kernel of independent fma chains (counter TFLOP/s), the bar for
//     opencl_nf4's large batches (OpenCL reaches no tensor cores);
//   "qlora_step/<shape>": a training step (forward, backward, AdamW8bit on the
//     adapters) of a Llama-shaped stack with LoRA on every projection, NF4
//     base against a bf16 base; counters: tokens/s and peak memory.
// Times are CUDA event intervals on the current stream (GPU time).
// LOWBIT_BENCH_SIZES (e.g. "16M,64M") restricts the optimizer sizes.
#include <cuda_runtime_api.h>

#ifdef LOWBIT_BENCH_OPENCL_PEAK
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#endif

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench/optim_common.h"
#include "bench/ratio_reporter.h"
#include "kernels/backend.h"
#include "lora/apply_lora.h"
#include "lora/quantize_model.h"
#include "nn/linear_like.h"
#include "quant/quantize.h"

namespace lowbit::bench {
namespace {

const torch::Device kCuda(torch::kCUDA, 0);

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "bench_cuda: %s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
  }
}

// Runs `fn` once untimed, then times each iteration with CUDA events.
void time_on_gpu(benchmark::State& state, const std::function<void()>& fn) {
  fn();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  for (auto _ : state) {
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    fn();
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    state.SetIterationTime(double(ms) / 1e3);
  }
  check(cudaEventDestroy(start), "cudaEventDestroy");
  check(cudaEventDestroy(stop), "cudaEventDestroy");
}

benchmark::internal::Benchmark* reg(const std::string& name,
                                    std::function<void(benchmark::State&)> fn,
                                    benchmark::TimeUnit unit) {
  return benchmark::RegisterBenchmark(name.c_str(), fn)
      ->Unit(unit)
      ->UseManualTime()
      ->MinTime(0.3);
}

// ---- optimizer steps ----

void register_optimizer(Family f, int64_t n, const std::string& size) {
  const std::string group = std::string(family_name(f)) + "/" + size + "/cuda";
  const auto ms = benchmark::kMillisecond;
  reg("copy/" + group, [n](benchmark::State& state) {
    const auto src = torch::randn({n}, kCuda);
    auto dst = torch::empty_like(src);
    time_on_gpu(state, [&] { dst.copy_(src); });
    state.counters["bytes"] = 8.0 * double(n);
  }, ms);
#ifdef LOWBIT_BENCH_TORCH_FUSED
  if (f == Family::AdamW)
    reg("torch_fused/" + group, [n](benchmark::State& state) {
      Problem problem(n, torch::kFloat32, kCuda);
      TorchFusedAdam fused(Family::AdamW, problem.param);
      time_on_gpu(state, [&] { fused.step(); });
      state.counters["bytes"] = 28.0 * double(n);  // p, m, v read and written, g read
    }, ms);
#endif
  const auto lowbit = [&](const std::string& op, int64_t bits, optim::NonFinitePolicy policy) {
    reg(op + "/" + group, [f, n, bits, policy](benchmark::State& state) {
      Problem problem(n, torch::kFloat32, kCuda);
      auto opt = lowbit_optimizer(f, problem.param, bits);
      opt->set_nonfinite_policy(policy);
      time_on_gpu(state, [&] { opt->step(); });
      const bool checked = policy != optim::NonFinitePolicy::SkipBlocks;
      state.counters["bytes"] = lowbit_bytes_per_param(f, bits, checked, 4.0) * double(n);
      state.counters["state_B/param"] = double(opt->state_bytes()) / double(n);
    }, ms);
  };
  lowbit("lowbit8", 8, optim::NonFinitePolicy::SkipStep);
  if (f == Family::AdamW) {
    lowbit("lowbit8_skipblocks", 8, optim::NonFinitePolicy::SkipBlocks);
    lowbit("lowbit32", 32, optim::NonFinitePolicy::SkipStep);
  }
}

Sizes optimizer_sizes() {
  return sizes_from_env(
      {{"16M", int64_t(16) << 20}, {"64M", int64_t(64) << 20}, {"256M", int64_t(256) << 20}});
}

// ---- Linear4bit against torch's linear ----

// Enough copies of a layer of `bytes` that the rotation streams from memory
// (twice the H200's 60 MB of L2).
int64_t copies_for(int64_t bytes) { return std::max<int64_t>(1, (int64_t(120) << 20) / bytes + 1); }

void register_linear(int64_t out, int64_t in, int64_t m, torch::ScalarType dtype) {
  const std::string group = "linear/" + std::to_string(out) + "x" + std::to_string(in) + "/m" +
                            std::to_string(m) + "/" + (dtype == torch::kFloat16 ? "f16" : "bf16");
  const auto us = benchmark::kMicrosecond;
  reg("torch_linear/" + group, [=](benchmark::State& state) {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> weights;
    for (int64_t c = copies_for(out * in * 2); c > 0; --c)
      weights.push_back(torch::randn({out, in}, torch::TensorOptions(kCuda).dtype(dtype)) * 0.02);
    const auto x = torch::randn({m, in}, torch::TensorOptions(kCuda).dtype(dtype));
    size_t k = 0;
    time_on_gpu(state, [&] { torch::linear(x, weights[k++ % weights.size()]); });
  }, us);
  reg("lowbit_nf4/" + group, [=](benchmark::State& state) {
    torch::NoGradGuard no_grad;
    std::vector<lora::Linear4bit> layers;
    for (int64_t c = copies_for(out * in / 2); c > 0; --c) {
      const auto [packed, quant_state] =
          quant::quantize_4bit(torch::randn({out, in}, torch::TensorOptions(kCuda)) * 0.02);
      layers.emplace_back(packed, quant_state, torch::Tensor(),
                          lora::Linear4bitOptions().compute_dtype(dtype));
    }
    const auto x = torch::randn({m, in}, torch::TensorOptions(kCuda).dtype(dtype));
    size_t k = 0;
    time_on_gpu(state, [&] { layers[k++ % layers.size()]->forward(x); });
  }, us);
}

// ---- the OpenCL backend's 4-bit matmul on the same GPU ----

// The OpenCL device whose name holds LOWBIT_BENCH_OPENCL_DEVICE (default
// "NVIDIA"), or null.
kernels::Backend* opencl_gpu() {
  static const std::shared_ptr<kernels::Backend> backend = []() -> std::shared_ptr<kernels::Backend> {
    const char* chosen = std::getenv("LOWBIT_BENCH_OPENCL_DEVICE");
    const std::string name = chosen ? chosen : "NVIDIA";
    for (const std::string& device : kernels::opencl_devices())
      if (device.find(name) != std::string::npos) return kernels::make_backend({"opencl", -1, name});
    return nullptr;
  }();
  return backend.get();
}

// gemv_4bit (m = 1) or gemm_4bit on device-resident buffers: NF4, block 64,
// double quantization (nested blocks of 256), random codes; the layers rotate
// as lowbit_nf4's do. With `input_grad` (opencl_nf4_dx), gemm_4bit_input_grad
// instead: dx[m, in] = dy[m, out] W, as many multiply-adds as the forward pass.
// OpenCL has no CUDA events here: the wall time of 8 calls queued back to back
// and one wait, per call.
void register_opencl_linear(int64_t out, int64_t in, int64_t m, torch::ScalarType dtype,
                            bool input_grad) {
  const std::string group = "linear/" + std::to_string(out) + "x" + std::to_string(in) + "/m" +
                            std::to_string(m) + "/" + (dtype == torch::kFloat16 ? "f16" : "bf16");
  const std::string op = input_grad ? "opencl_nf4_dx/" : "opencl_nf4/";
  reg(op + group, [=](benchmark::State& state) {
    kernels::Backend& be = *opencl_gpu();
    const auto type = dtype == torch::kFloat16 ? kernels::DType::F16 : kernels::DType::BF16;
    const size_t n = size_t(out) * size_t(in), blocks = kernels::num_blocks(n, 64);
    std::mt19937 rng(1);
    const auto random_bytes = [&](size_t count) {
      std::vector<uint8_t> v(count);
      for (auto& b : v) b = uint8_t(rng());
      return v;
    };
    const auto upload = [&](const void* data, size_t bytes) {
      std::unique_ptr<kernels::Buffer> buffer = be.allocate(bytes);
      be.write(*buffer, data, bytes);
      return buffer;
    };
    const auto map = kernels::dynamic_map(true);
    const auto nested_code = upload(map.data(), map.size() * 4);
    const std::vector<float> nested(kernels::num_blocks(blocks, 256), 0.01f);
    const auto nested_absmax = upload(nested.data(), nested.size() * 4);
    const std::vector<uint8_t> packed = random_bytes(kernels::packed_4bit_bytes(n));
    const std::vector<uint8_t> absmax = random_bytes(blocks);
    std::vector<std::unique_ptr<kernels::Buffer>> buffers;
    std::vector<kernels::Weight4bit> layers;
    for (int64_t c = copies_for(out * in / 2); c > 0; --c) {
      buffers.push_back(upload(packed.data(), packed.size()));
      buffers.push_back(upload(absmax.data(), absmax.size()));
      kernels::Weight4bit w;
      w.packed = buffers[buffers.size() - 2].get();
      w.absmax = buffers.back().get();
      w.out_features = size_t(out);
      w.in_features = size_t(in);
      w.nested_absmax = nested_absmax.get();
      w.nested_code = nested_code.get();
      layers.push_back(w);
    }
    // Activations: normal values as 16-bit floats (torch converts them).
    // (The input gradient's dy [m, out] in x, its dx [m, in] in y.)
    const torch::Tensor xt = torch::randn({m, input_grad ? out : in}).to(dtype);
    const auto x = upload(xt.data_ptr(), size_t(xt.nbytes()));
    const auto y = be.allocate(size_t(m * (input_grad ? in : out)) * 2);
    size_t k = 0;
    const auto call = [&] {
      const kernels::Weight4bit& w = layers[k++ % layers.size()];
      if (input_grad) be.gemm_4bit_input_grad(*x, size_t(m), w, *y, type);
      else if (m == 1) be.gemv_4bit(*x, w, nullptr, *y, type);
      else be.gemm_4bit(*x, size_t(m), w, nullptr, *y, type);
    };
    call();
    be.synchronize();
    for (auto _ : state) {
      const auto start = std::chrono::steady_clock::now();
      for (int r = 0; r < 8; ++r) call();
      be.synchronize();
      state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 8);
    }
  }, benchmark::kMicrosecond);
}

#ifdef LOWBIT_BENCH_OPENCL_PEAK
// The float32 FMA peak of the OpenCL device whose name holds
// LOWBIT_BENCH_OPENCL_DEVICE (default "NVIDIA"): every item runs 8
// independent chains of fma (enough to cover the FMA latency), 64 per loop
// turn, over enough work-groups to fill every compute unit several times.
// Its own context and program: the library's kernels are not involved.
constexpr const char* kPeakSource = R"CL(
__kernel void fma_peak(__global float* out, float a, float b, int turns) {
  float x[8];
  for (int c = 0; c < 8; ++c) x[c] = (float)(get_global_id(0) + c);
  for (int t = 0; t < turns; ++t)
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 8; ++c) x[c] = fma(x[c], a, b);
  float s = 0.0f;
  for (int c = 0; c < 8; ++c) s += x[c];
  out[get_global_id(0)] = s;
}
)CL";

void cl_check(cl_int err, const char* what) {
  if (err != CL_SUCCESS) {
    std::fprintf(stderr, "bench_cuda: %s failed: OpenCL error %d\n", what, int(err));
    std::exit(1);
  }
}

void register_opencl_peak() {
  reg("opencl_fma/fp32_peak/opencl", [](benchmark::State& state) {
    const char* chosen = std::getenv("LOWBIT_BENCH_OPENCL_DEVICE");
    const std::string want = chosen ? chosen : "NVIDIA";
    cl_platform_id platforms[16];
    cl_uint np = 0;
    cl_check(clGetPlatformIDs(16, platforms, &np), "clGetPlatformIDs");
    cl_device_id device = nullptr;
    for (cl_uint p = 0; p < np && !device; ++p) {
      cl_device_id devices[16];
      cl_uint nd = 0;
      if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 16, devices, &nd) != CL_SUCCESS) continue;
      char platform[256] = {};
      cl_check(clGetPlatformInfo(platforms[p], CL_PLATFORM_NAME, sizeof(platform) - 1, platform,
                                 nullptr),
               "clGetPlatformInfo");
      for (cl_uint d = 0; d < nd && !device; ++d) {
        char name[256] = {};
        cl_check(clGetDeviceInfo(devices[d], CL_DEVICE_NAME, sizeof(name) - 1, name, nullptr),
                 "clGetDeviceInfo");
        if ((std::string(platform) + "/" + name).find(want) != std::string::npos) device = devices[d];
      }
    }
    if (!device) {
      state.SkipWithError("no such OpenCL device");
      return;
    }
    cl_uint units = 0;
    cl_check(clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof(units), &units, nullptr),
             "clGetDeviceInfo");
    cl_int err = CL_SUCCESS;
    cl_context context = clCreateContext(nullptr, 1, &device, nullptr, nullptr, &err);
    cl_check(err, "clCreateContext");
    cl_command_queue queue = clCreateCommandQueue(context, device, 0, &err);
    cl_check(err, "clCreateCommandQueue");
    const char* source = kPeakSource;
    cl_program program = clCreateProgramWithSource(context, 1, &source, nullptr, &err);
    cl_check(err, "clCreateProgramWithSource");
    cl_check(clBuildProgram(program, 1, &device, "-cl-std=CL1.2", nullptr, nullptr), "clBuildProgram");
    cl_kernel kernel = clCreateKernel(program, "fma_peak", &err);
    cl_check(err, "clCreateKernel");
    const size_t local = 256, global = size_t(units) * 2048 * 4;
    cl_mem out = clCreateBuffer(context, CL_MEM_WRITE_ONLY, global * sizeof(float), nullptr, &err);
    cl_check(err, "clCreateBuffer");
    const float a = 0.999f, b = 0.001f;
    const cl_int turns = 2048;
    cl_check(clSetKernelArg(kernel, 0, sizeof(out), &out), "clSetKernelArg");
    cl_check(clSetKernelArg(kernel, 1, sizeof(a), &a), "clSetKernelArg");
    cl_check(clSetKernelArg(kernel, 2, sizeof(b), &b), "clSetKernelArg");
    cl_check(clSetKernelArg(kernel, 3, sizeof(turns), &turns), "clSetKernelArg");
    const auto run = [&] {
      cl_check(clEnqueueNDRangeKernel(queue, kernel, 1, nullptr, &global, &local, 0, nullptr, nullptr),
               "clEnqueueNDRangeKernel");
      cl_check(clFinish(queue), "clFinish");
    };
    run();
    double seconds = 0;
    for (auto _ : state) {
      const auto start = std::chrono::steady_clock::now();
      run();
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      seconds += t;
      state.SetIterationTime(t);
    }
    const double flop = 2.0 * 64.0 * double(turns) * double(global);
    state.counters["TFLOP/s"] = flop * double(state.iterations()) / seconds / 1e12;
    clReleaseMemObject(out);
    clReleaseKernel(kernel);
    clReleaseProgram(program);
    clReleaseCommandQueue(queue);
    clReleaseContext(context);
  }, benchmark::kMicrosecond);
}
#endif

// ---- a QLoRA training step ----

// One Llama-shaped decoder block: RMSNorm, causal self-attention (q, k, v, o),
// SwiGLU MLP (gate, up, down); the projections are Linear modules so that
// quantize_model and apply_lora find them by path.
struct BlockImpl : torch::nn::Module {
  BlockImpl(int64_t width, int64_t hidden, int64_t heads) : heads(heads) {
    // Registered only (no typed members holding them): quantize_model and apply_lora replace
    // them in the registry, and forward() calls them there.
    const auto lin = [&](const char* name, int64_t in, int64_t out) {
      register_module(name, torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)));
    };
    lin("q_proj", width, width);
    lin("k_proj", width, width);
    lin("v_proj", width, width);
    lin("o_proj", width, width);
    lin("gate_proj", width, hidden);
    lin("up_proj", width, hidden);
    lin("down_proj", hidden, width);
    norm1 = register_parameter("norm1", torch::ones({width}));
    norm2 = register_parameter("norm2", torch::ones({width}));
  }
  static torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w) {
    const auto xf = x.to(torch::kFloat32);
    return (xf * torch::rsqrt(xf.pow(2).mean(-1, true) + 1e-5)).to(x.scalar_type()) * w;
  }
  torch::Tensor forward(torch::Tensor x) {
    const int64_t b = x.size(0), t = x.size(1), width = x.size(2), d = width / heads;
    auto h = rms_norm(x, norm1);
    const auto split = [&](const torch::Tensor& y) {
      return y.view({b, t, heads, d}).transpose(1, 2);
    };
    auto q = split(modules_call("q_proj", h)), k = split(modules_call("k_proj", h)),
         v = split(modules_call("v_proj", h));
    auto a = torch::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
    x = x + modules_call("o_proj", a.transpose(1, 2).reshape({b, t, width}));
    h = rms_norm(x, norm2);
    h = torch::silu(modules_call("gate_proj", h)) * modules_call("up_proj", h);
    return x + modules_call("down_proj", h);
  }
  torch::Tensor modules_call(const std::string& name, const torch::Tensor& x) {
    return lowbit::nn::forward_linear(*this, name, x);
  }
  int64_t heads;
  torch::Tensor norm1, norm2;
};
TORCH_MODULE(Block);

struct StackImpl : torch::nn::Module {
  StackImpl(int64_t depth, int64_t width, int64_t hidden, int64_t heads) {
    for (int64_t i = 0; i < depth; ++i)
      blocks.push_back(register_module("layer" + std::to_string(i), Block(width, hidden, heads)));
  }
  torch::Tensor forward(torch::Tensor x) {
    for (auto& b : blocks) x = b->forward(x);
    return x;
  }
  std::vector<Block> blocks;
};
TORCH_MODULE(Stack);

void register_qlora_step(bool nf4) {
  constexpr int64_t kDepth = 8, kWidth = 2048, kHidden = 5632, kHeads = 16, kSeq = 512;
  const std::string group = "qlora_step/llama8x2048_seq512";
  reg(std::string(nf4 ? "nf4_base" : "bf16_base") + "/" + group, [=](benchmark::State& state) {
    torch::manual_seed(0);
    Stack model(kDepth, kWidth, kHidden, kHeads);
    model->to(kCuda, torch::kBFloat16);
    if (nf4) {
      lora::QuantizeConfig q;
      q.include = {".*_proj"};
      q.four_bit.compute_dtype(torch::kBFloat16);
      lora::quantize_model(*model, q);
    }
    lora::LoraConfig config;
    config.r = 16;
    config.lora_alpha = 32;
    config.target_modules = {".*_proj"};
    config.dtype = torch::kBFloat16;
    config.compute_dtype = torch::kBFloat16;
    const auto params = lora::apply_lora(*model, config);
    optim::AdamW8bit opt(params, optim::AdamW8bitOptions(1e-4));
    const auto x = torch::randn({1, kSeq, kWidth}, torch::TensorOptions(kCuda).dtype(torch::kBFloat16));
    const auto step = [&] {
      opt.zero_grad();
      const auto loss = model->forward(x).to(torch::kFloat32).pow(2).mean();
      loss.backward();
      opt.step();
    };
    step();
    c10::cuda::CUDACachingAllocator::resetPeakStats(0);
    time_on_gpu(state, step);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
    const auto peak = stats.allocated_bytes[size_t(c10::CachingAllocator::StatType::AGGREGATE)].peak;
    state.counters["peak_GiB"] = double(peak) / double(1 << 30);
    state.counters["tokens/s"] =
        benchmark::Counter(double(kSeq), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["base_bytes"] = double(lora::model_size(*model).bytes);
  }, benchmark::kMillisecond)->Repetitions(1);
}

}  // namespace
}  // namespace lowbit::bench

int main(int argc, char** argv) {
  using namespace lowbit::bench;
  benchmark::Initialize(&argc, argv);
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "bench_cuda: no CUDA device\n");
    return 1;
  }
  for (const auto& [name, n] : optimizer_sizes())
    for (Family f : {Family::AdamW, Family::Lion, Family::RMSprop, Family::LAMB})
      register_optimizer(f, n, name);
  for (auto dtype : {torch::kFloat16, torch::kBFloat16})
    for (const auto& [out, in] : std::vector<std::pair<int64_t, int64_t>>{
             {4096, 4096}, {14336, 4096}, {4096, 14336}})
      for (int64_t m : {1, 16, 64, 512}) {
        register_linear(out, in, m, dtype);
        if (opencl_gpu()) {
          register_opencl_linear(out, in, m, dtype, false);
          if (m > 1) register_opencl_linear(out, in, m, dtype, true);
        }
      }
#ifdef LOWBIT_BENCH_OPENCL_PEAK
  if (opencl_gpu()) register_opencl_peak();
#endif
  for (bool nf4 : {false, true}) register_qlora_step(nf4);
  RatioReporter reporter(std::vector<std::string>{"torch_fused", "copy", "torch_linear", "bf16_base"});
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
