#include "kernels/cuda/gemm_int8.h"

#include <cuda_runtime.h>

#include "kernels/backend.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/device_util.cuh"

namespace lowbit::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// One block per row of x: absmax by a block reduction, then the codes
// round-half-even(x * (127 / absmax)) (__float2int_rn, the CPU's nearbyint).
// row_factor = absmax * kInt8Dequant, or NaN when the row holds inf or NaN.
__global__ void quantize_rows(const float* __restrict__ x, size_t k, int8_t* __restrict__ codes,
                              float* __restrict__ row_factor) {
  __shared__ float warp_max[kWarps];
  __shared__ int warp_bad[kWarps];
  const float* xr = x + size_t(blockIdx.x) * k;
  int8_t* c = codes + size_t(blockIdx.x) * k;
  float a = 0.0f;
  int bad = 0;
  for (size_t j = threadIdx.x; j < k; j += kThreads) {
    const float v = xr[j];
    bad |= int(!isfinite(v));
    a = fmaxf(a, fabsf(v));
  }
  for (int off = 16; off > 0; off >>= 1) {
    a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, off));
    bad |= __shfl_xor_sync(0xffffffffu, bad, off);
  }
  if (threadIdx.x % 32 == 0) {
    warp_max[threadIdx.x / 32] = a;
    warp_bad[threadIdx.x / 32] = bad;
  }
  __syncthreads();
  a = 0.0f;
  bad = 0;
  for (int w = 0; w < kWarps; ++w) {
    a = fmaxf(a, warp_max[w]);
    bad |= warp_bad[w];
  }
  const float inv = (a > 0.0f && !bad) ? __fdiv_rn(127.0f, a) : 0.0f;
  for (size_t j = threadIdx.x; j < k; j += kThreads)
    c[j] = int8_t(__float2int_rn(__fmul_rn(xr[j], inv)));
  if (threadIdx.x == 0)
    row_factor[blockIdx.x] = bad ? __int_as_float(0x7fc00000) : __fmul_rn(a, kInt8Dequant);
}

// One warp per output (r, o): lanes stride over the row pair, four bytes at a
// time when every row starts on a 4-byte boundary (`words`).
__global__ void int8_dot(const int8_t* __restrict__ codes, const float* __restrict__ row_factor,
                         size_t m, WeightInt8Dev w, bool words, const float* __restrict__ bias,
                         float* __restrict__ y) {
  const size_t warp = (size_t(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= m * w.out_features) return;
  const size_t r = warp / w.out_features, o = warp % w.out_features;
  const size_t k = w.in_features;
  const int8_t* xr = codes + r * k;
  const int8_t* wr = w.codes + o * k;
  int acc = 0;
  if (words) {
    const int* x4 = reinterpret_cast<const int*>(xr);
    const int* w4 = reinterpret_cast<const int*>(wr);
    for (size_t j = lane; j < k / 4; j += 32) acc = __dp4a(x4[j], w4[j], acc);
  } else {
    for (size_t j = lane; j < k; j += 32) acc += int(xr[j]) * int(wr[j]);
  }
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) {
    float v = __fmul_rn(__fmul_rn(__int2float_rn(acc), row_factor[r]), w.scale[o]);
    if (bias) v = __fadd_rn(v, bias[o]);
    y[r * w.out_features + o] = v;
  }
}

}  // namespace

void gemm_int8(const float* x, size_t m, const WeightInt8Dev& w, const float* bias, float* y,
               cudaStream_t stream) {
  const size_t k = w.in_features;
  // Codes first (rounded up to keep the factors 4-byte aligned), then factors.
  const size_t code_bytes = (m * k + 3) / 4 * 4;
  DeviceScratch scratch(code_bytes + m * sizeof(float), stream);
  int8_t* codes = scratch.as<int8_t>();
  float* row_factor = reinterpret_cast<float*>(scratch.as<uint8_t>() + code_bytes);
  quantize_rows<<<unsigned(m), kThreads, 0, stream>>>(x, k, codes, row_factor);
  LOWBIT_CUDA_LAUNCHED("gemm_int8 (quantize rows)");
  const size_t warps = m * w.out_features;
  const size_t blocks = (warps + kWarps - 1) / kWarps;
  const bool words = k % 4 == 0 && reinterpret_cast<uintptr_t>(w.codes) % 4 == 0;
  int8_dot<<<unsigned(blocks), kThreads, 0, stream>>>(codes, row_factor, m, w, words, bias, y);
  LOWBIT_CUDA_LAUNCHED("gemm_int8");
}

}  // namespace lowbit::kernels::cuda
