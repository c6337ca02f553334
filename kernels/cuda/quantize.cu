// Blockwise 8-bit and 4-bit (NF4 / FP4) quantization on CUDA: the twins of
// kernels/cpu/blockwise_8bit.cpp and quantize_4bit.cpp, same codes bit for bit.
// Each thread owns eight consecutive elements; the blocksize / 8 threads of a
// quantization block reduce its absmax together.
#include <algorithm>
#include <limits>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_util.cuh"

namespace lowbit::kernels::cuda {
namespace {

constexpr int kMinThreads = 256;

// Threads of a block-reducing kernel: one group of blocksize / 8 per block,
// at least kMinThreads.
int threads_for(int blocksize) { return std::max(kMinThreads, blocksize / 8); }

__global__ void build_code_table_kernel(const float* code, CodeTable* table) {
  build_code_table(code, table);
}

// Largest entry <= r (0 below every entry): bitsandbytes' stochastic rounding
// picks it or the next one.
__device__ __forceinline__ int stochastic_code(const float* code, float r, float u) {
  if (r <= code[0]) return 0;
  if (r >= code[255]) return 255;
  int lo = 0;
#pragma unroll
  for (int step = 128; step > 0; step >>= 1) lo += (r >= code[lo + step]) ? step : 0;
  return lo + lb_round_up(r, code[lo], code[lo + 1], u);
}

// Runs body(i, v, mf) for every quantization block of x: blocksize / 8
// threads share a block, each holding eight elements v = x[i, i + 8) (zeros
// past n); mf is the block's max |x|, already stored in absmax (NaN when the
// block holds one: a NaN's magnitude bits exceed inf's, the absmax rule of
// kernels/shared_math.h). Every thread of the CUDA block takes part in the
// reduction, active or not.
template <typename T, typename Body>
__device__ __forceinline__ void for_each_block(const typename T::Storage* x, size_t n,
                                               int blocksize, float* absmax, Body&& body) {
  __shared__ uint32_t scratch[32];
  const int g = blocksize / 8;
  const size_t groups = blockDim.x / g;
  const size_t nb = blocks_of(n, blocksize);
  const size_t group = threadIdx.x / g, lane = threadIdx.x % g;
  for (size_t first = blockIdx.x * groups; first < nb; first += size_t(gridDim.x) * groups) {
    const size_t b = first + group;
    const bool active = b < nb;
    const size_t i = b * size_t(blocksize) + lane * 8;
    float v[8] = {};
    if (active) load8<T>(x, i, n, v);
    uint32_t m = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) m = max(m, magnitude_bits(v[k]));
    const float mf = __uint_as_float(group_max(m, g, scratch));
    if (!active) continue;
    if (lane == 0) absmax[b] = mf;
    body(i, v, mf);
  }
}

template <typename T>
__global__ void __launch_bounds__(512)
    quantize_blockwise_kernel(const typename T::Storage* x, size_t n, int blocksize,
                              const float* code, const CodeTable* cached, float* absmax,
                              uint8_t* codes, int stochastic, uint32_t seed_lo, uint32_t seed_hi) {
  __shared__ CodeTable table;
  load_code_table(cached, code, &table);
  for_each_block<T>(x, n, blocksize, absmax, [&](size_t i, const float (&v)[8], float mf) {
    uint8_t c[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if (!lb_absmax_scales(mf)) {
        c[k] = uint8_t(table.zero);
      } else {
        const float r = v[k] / mf;
        const size_t e = i + size_t(k);
        c[k] = stochastic ? uint8_t(stochastic_code(
                                table.code, r,
                                lb_uniform(seed_lo, seed_hi, uint32_t(e), uint32_t(e >> 32))))
                          : encode(table, r);
      }
    }
    store8_bytes(codes, i, n, c);
  });
}

template <typename T>
__global__ void dequantize_blockwise_kernel(const uint8_t* codes, const float* absmax,
                                            const float* code, size_t n, int blocksize,
                                            typename T::Storage* out, float offset) {
  __shared__ float lcode[256];
  for (int k = int(threadIdx.x); k < 256; k += int(blockDim.x)) lcode[k] = code[k];
  __syncthreads();
  for (size_t i = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) * 8; i < n;
       i += size_t(gridDim.x) * blockDim.x * 8) {
    uint8_t c[8];
    load8_bytes(codes, i, n, c);
    const float m = absmax[i / size_t(blocksize)];  // blocks hold whole groups of 8
    float v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = lcode[c[k]] * m + offset;  // two roundings (no FMA)
    store8<T>(out, i, n, v);
  }
}

// A 4-bit format by value: midpoints (then +inf), codes in value order, values.
struct Format4Args {
  float mid[16];
  float value[16];
  uint8_t sorted_code[16];
  uint8_t zero_code, negative_zero_code;
};

Format4Args format4_args(Format4 format) {
  const Format4Table& t = format4_table(format);
  Format4Args a{};
  for (int k = 0; k < 16; ++k) {
    a.mid[k] = k < 15 ? t.midpoint[size_t(k)] : std::numeric_limits<float>::infinity();
    a.value[k] = t.value[size_t(k)];
    a.sorted_code[k] = t.sorted_code[size_t(k)];
  }
  a.zero_code = t.zero_code;
  a.negative_zero_code = t.negative_zero_code;
  return a;
}

__device__ __forceinline__ uint32_t encode_4bit(const Format4Args& f, float r) {
  int pos = 0;
#pragma unroll
  for (int k = 0; k < 15; ++k) pos += r > f.mid[k] ? 1 : 0;
  const uint8_t c = f.sorted_code[pos];
  return (c == f.zero_code && r < 0.0f) ? f.negative_zero_code : c;
}

template <typename T>
__global__ void __launch_bounds__(512)
    quantize_4bit_kernel(const typename T::Storage* x, size_t n, int blocksize, Format4Args f,
                         float* absmax, uint8_t* packed) {
  for_each_block<T>(x, n, blocksize, absmax, [&](size_t i, const float (&v)[8], float mf) {
    // Past n (the padding nibble) and in an all-zero or non-finite block
    // (lb_absmax_scales), r = 0.
    const bool scales = lb_absmax_scales(mf);
    uint32_t bytes[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float r0 = scales ? v[2 * k] / mf : 0.0f;
      const float r1 = scales ? v[2 * k + 1] / mf : 0.0f;
      bytes[k] = encode_4bit(f, r0) << 4 | encode_4bit(f, r1);
    }
    uint8_t* out = packed + i / 2;
    if (i + 8 <= n && (reinterpret_cast<uintptr_t>(out) & 3) == 0) {
      *reinterpret_cast<uint32_t*>(out) = bytes[0] | bytes[1] << 8 | bytes[2] << 16 | bytes[3] << 24;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (i + size_t(2 * k) < n) out[k] = uint8_t(bytes[k]);
    }
  });
}

template <typename T>
__global__ void dequantize_4bit_kernel(const uint8_t* packed, const float* absmax, size_t n,
                                       int blocksize, Format4Args f, typename T::Storage* out) {
  for (size_t i = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) * 8; i < n;
       i += size_t(gridDim.x) * blockDim.x * 8) {
    const uint8_t* in = packed + i / 2;
    uint32_t word = 0;
    if (i + 8 <= n && (reinterpret_cast<uintptr_t>(in) & 3) == 0) {
      word = *reinterpret_cast<const uint32_t*>(in);
    } else {
      for (int k = 0; k < 4; ++k)
        if (i + size_t(2 * k) < n) word |= uint32_t(in[k]) << (8 * k);
    }
    const float m = absmax[i / size_t(blocksize)];
    float v[8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t byte = (word >> (8 * k)) & 0xffu;
      v[2 * k] = f.value[byte >> 4] * m;
      v[2 * k + 1] = f.value[byte & 15u] * m;
    }
    store8<T>(out, i, n, v);
  }
}

unsigned elementwise_grid(size_t n, const Launch& l) {
  return grid_for((n + 7) / 8, kMinThreads, l.max_blocks());
}

}  // namespace

void build_code_table(const float* code, CodeTable* table, const Launch& l) {
  build_code_table_kernel<<<1, 512, 0, l.stream>>>(code, table);
  LOWBIT_CUDA_LAUNCHED("build_code_table");
}

void quantize_blockwise(const void* x, DType x_type, size_t n, int blocksize, const float* code,
                        const CodeTable* table, float* absmax, uint8_t* codes,
                        const StochasticRounding& rounding, const Launch& l) {
  const int threads = threads_for(blocksize);
  const unsigned grid = grid_for(blocks_of(n, blocksize), size_t(threads / (blocksize / 8)),
                                 l.max_blocks());
  dispatch_float(x_type, [&](auto tag) {
    using T = decltype(tag);
    quantize_blockwise_kernel<T><<<grid, threads, 0, l.stream>>>(
        static_cast<const typename T::Storage*>(x), n, blocksize, code, table, absmax, codes,
        rounding.enabled ? 1 : 0, uint32_t(rounding.seed), uint32_t(rounding.seed >> 32));
  });
  LOWBIT_CUDA_LAUNCHED("quantize_blockwise");
}

void dequantize_blockwise(const uint8_t* codes, const float* absmax, const float* code, size_t n,
                          int blocksize, void* out, DType out_type, float offset, const Launch& l) {
  dispatch_float(out_type, [&](auto tag) {
    using T = decltype(tag);
    dequantize_blockwise_kernel<T><<<elementwise_grid(n, l), kMinThreads, 0, l.stream>>>(
        codes, absmax, code, n, blocksize, static_cast<typename T::Storage*>(out), offset);
  });
  LOWBIT_CUDA_LAUNCHED("dequantize_blockwise");
}

void quantize_4bit(const void* x, DType x_type, size_t n, int blocksize, Format4 format,
                   float* absmax, uint8_t* packed, const Launch& l) {
  const int threads = threads_for(blocksize);
  const unsigned grid = grid_for(blocks_of(n, blocksize), size_t(threads / (blocksize / 8)),
                                 l.max_blocks());
  const Format4Args f = format4_args(format);
  dispatch_float(x_type, [&](auto tag) {
    using T = decltype(tag);
    quantize_4bit_kernel<T><<<grid, threads, 0, l.stream>>>(
        static_cast<const typename T::Storage*>(x), n, blocksize, f, absmax, packed);
  });
  LOWBIT_CUDA_LAUNCHED("quantize_4bit");
}

void dequantize_4bit(const uint8_t* packed, const float* absmax, size_t n, int blocksize,
                     Format4 format, void* out, DType out_type, const Launch& l) {
  const Format4Args f = format4_args(format);
  dispatch_float(out_type, [&](auto tag) {
    using T = decltype(tag);
    dequantize_4bit_kernel<T><<<elementwise_grid(n, l), kMinThreads, 0, l.stream>>>(
        packed, absmax, n, blocksize, f, static_cast<typename T::Storage*>(out));
  });
  LOWBIT_CUDA_LAUNCHED("dequantize_4bit");
}

}  // namespace lowbit::kernels::cuda
