// Device-side helpers of the CUDA kernels: error checks, typed element access
// with the CPU backend's rounding rules, reductions over the threads that share
// one quantization block, and exact nearest-code search in a 256-entry codebook
// (CodeTable). Internal to kernels/cuda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/shared_math.h"

namespace lowbit::kernels::cuda {

// Throws naming the failed call and CUDA's description of the error.
inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail("lowbit: CUDA error in ", what, ": ", cudaGetErrorString(err));
}
#define LOWBIT_CUDA_CHECK(call) ::lowbit::kernels::cuda::check((call), #call)
// After a launch: configuration errors surface here, faults at the next sync.
#define LOWBIT_CUDA_LAUNCHED(name) ::lowbit::kernels::cuda::check(cudaGetLastError(), name)

// ---- elements (numbered as kernels::DType) ----

struct F32 {
  using Storage = float;
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};
struct F16 {
  using Storage = uint16_t;
  static __device__ __forceinline__ float load(uint16_t v) {
    return __half2float(__ushort_as_half(v));
  }
  // Round to nearest even, overflow to inf: the CPU rule (NaN payloads may
  // differ; non-finite values never reach a store that the CPU compares).
  static __device__ __forceinline__ uint16_t store(float v) {
    return __half_as_ushort(__float2half_rn(v));
  }
};
struct BF16 {
  using Storage = uint16_t;
  static __device__ __forceinline__ float load(uint16_t v) {
    return __uint_as_float(uint32_t(v) << 16);
  }
  static __device__ __forceinline__ uint16_t store(float v) { return uint16_t(lb_bf16_bits(v)); }
};

// Calls fn(Tag{}) for a float DType (checked earlier by the Backend).
template <typename Fn>
void dispatch_float(DType t, Fn&& fn) {
  switch (t) {
    case DType::F32: fn(F32{}); return;
    case DType::F16: fn(F16{}); return;
    case DType::BF16: fn(BF16{}); return;
    case DType::U8: break;
  }
}

// The unsigned type of `kBytes` bytes a thread loads or stores at once.
template <int kBytes>
struct Vector;
template <>
struct Vector<16> {
  using type = uint4;
};
template <>
struct Vector<8> {
  using type = uint2;
};
template <>
struct Vector<4> {
  using type = uint32_t;
};

// N consecutive elements [i, i + N) of a T array as floats, elements at or
// past n reading 0: one vector load when they are in range and aligned.
// I: the index type (uint32_t where the whole array is indexable by it: fewer
// registers than size_t). kChecked = false: the caller knows that [i, i + N)
// is in range and p + i aligned to min(N * sizeof(element), 16) bytes, and
// nothing is checked.
template <typename T, int N, bool kChecked = true, typename I>
__device__ __forceinline__ void load_n(const typename T::Storage* p, I i, I n, float (&v)[N]) {
  using S = typename T::Storage;
  constexpr int kBytes = N * int(sizeof(S));
  const S* q = p + i;
  if constexpr (kBytes > 16) {  // two halves
    float lo[N / 2], hi[N / 2];
    load_n<T, N / 2, kChecked>(p, i, n, lo);
    load_n<T, N / 2, kChecked>(p, I(i + N / 2), n, hi);
#pragma unroll
    for (int k = 0; k < N / 2; ++k) v[k] = lo[k], v[N / 2 + k] = hi[k];
  } else {
    if constexpr (kChecked) {
      if (i + N > n || (reinterpret_cast<uintptr_t>(q) % kBytes) != 0) {
#pragma unroll
        for (int k = 0; k < N; ++k) v[k] = i + k < n ? T::load(q[k]) : 0.0f;
        return;
      }
    }
    const auto raw = *reinterpret_cast<const typename Vector<kBytes>::type*>(q);
    S s[N];
    memcpy(s, &raw, kBytes);
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] = T::load(s[k]);
  }
}

// Writes [i, min(i + N, n)) of a T array (rounded by T::store); kChecked as
// in load_n.
template <typename T, int N, bool kChecked = true, typename I>
__device__ __forceinline__ void store_n(typename T::Storage* p, I i, I n, const float (&v)[N]) {
  using S = typename T::Storage;
  constexpr int kBytes = N * int(sizeof(S));
  S* q = p + i;
  if constexpr (kBytes > 16) {
    float lo[N / 2], hi[N / 2];
#pragma unroll
    for (int k = 0; k < N / 2; ++k) lo[k] = v[k], hi[k] = v[N / 2 + k];
    store_n<T, N / 2, kChecked>(p, i, n, lo);
    store_n<T, N / 2, kChecked>(p, I(i + N / 2), n, hi);
  } else {
    if constexpr (kChecked) {
      if (i + N > n || (reinterpret_cast<uintptr_t>(q) % kBytes) != 0) {
#pragma unroll
        for (int k = 0; k < N; ++k)
          if (i + k < n) q[k] = T::store(v[k]);
        return;
      }
    }
    S s[N];
#pragma unroll
    for (int k = 0; k < N; ++k) s[k] = T::store(v[k]);
    typename Vector<kBytes>::type raw;
    memcpy(&raw, s, kBytes);
    *reinterpret_cast<typename Vector<kBytes>::type*>(q) = raw;
  }
}

// N bytes (codes) [i, i + N), past n reading 0 / not written.
template <int N, bool kChecked = true, typename I>
__device__ __forceinline__ void load_bytes(const uint8_t* p, I i, I n, uint8_t (&c)[N]) {
  const uint8_t* q = p + i;
  if constexpr (kChecked) {
    if (i + N > n || (reinterpret_cast<uintptr_t>(q) % N) != 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) c[k] = i + k < n ? q[k] : 0;
      return;
    }
  }
  const auto raw = *reinterpret_cast<const typename Vector<N>::type*>(q);
  memcpy(c, &raw, N);
}

template <int N, bool kChecked = true, typename I>
__device__ __forceinline__ void store_bytes(uint8_t* p, I i, I n, const uint8_t (&c)[N]) {
  uint8_t* q = p + i;
  if constexpr (kChecked) {
    if (i + N > n || (reinterpret_cast<uintptr_t>(q) % N) != 0) {
#pragma unroll
      for (int k = 0; k < N; ++k)
        if (i + k < n) q[k] = c[k];
      return;
    }
  }
  typename Vector<N>::type raw;
  memcpy(&raw, c, N);
  *reinterpret_cast<typename Vector<N>::type*>(q) = raw;
}

template <typename T>
__device__ __forceinline__ void load8(const typename T::Storage* p, size_t i, size_t n,
                                      float (&v)[8]) {
  load_n<T, 8>(p, i, n, v);
}
template <typename T>
__device__ __forceinline__ void store8(typename T::Storage* p, size_t i, size_t n,
                                       const float (&v)[8]) {
  store_n<T, 8>(p, i, n, v);
}
__device__ __forceinline__ void load8_bytes(const uint8_t* p, size_t i, size_t n, uint8_t (&c)[8]) {
  load_bytes<8>(p, i, n, c);
}
__device__ __forceinline__ void store8_bytes(uint8_t* p, size_t i, size_t n, const uint8_t (&c)[8]) {
  store_bytes<8>(p, i, n, c);
}

// ---- reductions over a group of `g` consecutive threads ----
// g is a power of two dividing blockDim.x (at most blockDim.x, which is at
// most 1024). Every thread of the CUDA block must call this (it synchronises
// the block when g > 32); every thread gets its group's result. `scratch` holds
// one value per warp of the block.
__device__ __forceinline__ uint32_t group_max(uint32_t v, int g, uint32_t* scratch) {
  const int width = g < 32 ? g : 32;
  for (int off = 1; off < width; off <<= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
  if (g > 32) {
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    const int warps = g / 32;
    __syncthreads();  // scratch may still be read by an earlier call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int first = warp / warps * warps;
    v = 0;
    for (int w = 0; w < warps; ++w) v = max(v, scratch[first + w]);
  }
  return v;
}

// Three maxima over a group of `g` threads at once, one block-wide barrier
// (when g > 32) per call: `scratch` holds 2 x 3 x 32 values, used alternately
// by calls of even and odd `parity`, so a call never overwrites values an
// earlier call's threads may still be reading.
__device__ __forceinline__ void group_max3(uint32_t& a, uint32_t& b, uint32_t& c, int g,
                                           uint32_t (*scratch)[3][32], int parity) {
  const auto step = [&](int off) {
    a = max(a, __shfl_xor_sync(0xffffffffu, a, off));
    b = max(b, __shfl_xor_sync(0xffffffffu, b, off));
    c = max(c, __shfl_xor_sync(0xffffffffu, c, off));
  };
  // Whole warps (every 256-element block at eight elements a thread):
  // unrolled, 30 instructions instead of a loop of 60 on the update's path.
  if (g >= 32) {
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) step(off);
  } else {
    for (int off = 1; off < g; off <<= 1) step(off);
  }
  if (g > 32) {
    uint32_t(&s)[3][32] = scratch[parity & 1];
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    if (lane == 0) s[0][warp] = a, s[1][warp] = b, s[2][warp] = c;
    __syncthreads();
    const int warps = g / 32, first = warp / warps * warps;
    for (int w = first; w < first + warps; ++w)
      a = max(a, s[0][w]), b = max(b, s[1][w]), c = max(c, s[2][w]);
  }
}

// Non-negative floats order like their bit patterns, so max |x| is an integer
// max of magnitude bits (NaN and inf compare above every finite value).
__device__ __forceinline__ uint32_t magnitude_bits(float x) { return __float_as_uint(x) & 0x7fffffffu; }
constexpr uint32_t kNonFinite = 0x7f800000u;

// ---- nearest code in a sorted 256-entry codebook ----
// code(r) = number of midpoints (code[k] + code[k + 1]) * 0.5f strictly below
// r (the nearest entry, ties low: the CPU's rule). Instead of an 8-step binary
// search, |r| is bucketed by its exponent and top kMantissaBits mantissa bits
// (one bucket for everything below 2^(kFirstExponent - 127), one for 2 and
// above), per sign; start[] holds the count at the bucket's lowest value, and
// `steps` compares r with the next midpoints (steps = the most midpoints any
// bucket spans: 1 for both dynamic maps). Built on the device from the
// codebook (build_code_table) and copied into shared memory per block.
constexpr int kMantissaBits = 7;
constexpr int kFirstExponent = 96;  // 2^-31
constexpr int kBuckets = 1 + 32 * (1 << kMantissaBits);

struct alignas(16) CodeTable {
  float code[256];
  float mid[256];  // 255 midpoints, then +inf
  uint8_t start[2 * kBuckets];  // [sign][bucket]
  uint8_t pad[6];
  int32_t steps;
  int32_t zero;  // entry of smallest magnitude (first on a tie): all-zero blocks
};
static_assert(sizeof(CodeTable) % 16 == 0, "CodeTable is copied in 16-byte pieces");

__device__ __forceinline__ int bucket_of(float r) {
  const uint32_t u = __float_as_uint(r);
  const int a = int((u & 0x7fffffffu) >> (23 - kMantissaBits)) - (kFirstExponent << kMantissaBits) + 1;
  const int idx = a < 0 ? 0 : (a > kBuckets - 1 ? kBuckets - 1 : a);
  return int(u >> 31) * kBuckets + idx;
}

// Number of midpoints strictly below r, by binary search (any codebook).
__device__ __forceinline__ int count_below(const float* mid, float r) {
  int pos = 0;
#pragma unroll
  for (int step = 128; step > 0; step >>= 1) pos += (r > mid[pos + step - 1]) ? step : 0;
  return pos;
}

// The code of r when no bucket spans more than one midpoint (steps == 1:
// both dynamic maps).
__device__ __forceinline__ uint8_t encode_one_step(const CodeTable& t, float r) {
  const int pos = t.start[bucket_of(r)];
  return uint8_t(pos + ((r > t.mid[pos]) ? 1 : 0));
}

__device__ __forceinline__ uint8_t encode(const CodeTable& t, float r) {
  if (t.steps == 1) return encode_one_step(t, r);
  if (t.steps > 8) return uint8_t(count_below(t.mid, r));
  int pos = t.start[bucket_of(r)];
  for (int s = 0; s < t.steps; ++s) pos += (r > t.mid[pos]) ? 1 : 0;
  return uint8_t(pos);
}

// c[k] = encode(t, v[k] * scale) for N values, with the steps test once for
// all of them: the dynamic maps' path is then straight-line code whose shared
// loads overlap, rather than N branches around N inlined general searches
// (which also cost instruction-cache misses on the update's hot loop).
template <int N>
__device__ __forceinline__ void encode_n(const CodeTable& t, const float (&v)[N], float scale,
                                         uint8_t (&c)[N]) {
  if (t.steps == 1) {
#pragma unroll
    for (int k = 0; k < N; ++k) c[k] = encode_one_step(t, v[k] * scale);
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) c[k] = encode(t, v[k] * scale);
  }
}

// Fills the table of `code` (256 ascending floats): one block of any size.
__device__ inline void build_code_table(const float* code, CodeTable* t);

// The table of `code` in shared memory `dst` (whole block; ends synchronised):
// a copy of `cached`, built for the codebook once, unless the codebook has
// changed since, in which case the block builds it again.
__device__ inline void load_code_table(const CodeTable* cached, const float* code,
                                       CodeTable* dst) {
  const uint4* s = reinterpret_cast<const uint4*>(cached);
  uint4* d = reinterpret_cast<uint4*>(dst);
  for (int i = int(threadIdx.x); i < int(sizeof(CodeTable) / 16); i += int(blockDim.x)) d[i] = s[i];
  __syncthreads();
  int changed = 0;
  for (int i = int(threadIdx.x); i < 256; i += int(blockDim.x))
    changed |= __float_as_uint(dst->code[i]) != __float_as_uint(code[i]) ? 1 : 0;
  if (__syncthreads_or(changed)) build_code_table(code, dst);
}

__device__ inline void build_code_table(const float* code, CodeTable* t) {
  for (int i = int(threadIdx.x); i < 256; i += int(blockDim.x)) {
    t->code[i] = code[i];
    t->mid[i] = i < 255 ? (code[i] + code[i + 1]) * 0.5f : __int_as_float(0x7f800000);
  }
  __syncthreads();
  int steps = 0;
  for (int e = int(threadIdx.x); e < 2 * kBuckets; e += int(blockDim.x)) {
    const int idx = e % kBuckets;
    const bool negative = e >= kBuckets;
    // Magnitude bits of the bucket's smallest and largest members.
    uint32_t lo = 0, hi = (uint32_t(kFirstExponent) << 23) - 1;
    if (idx > 0) {
      lo = uint32_t(idx - 1 + (kFirstExponent << kMantissaBits)) << (23 - kMantissaBits);
      hi = lo + (1u << (23 - kMantissaBits)) - 1;
    }
    if (idx == kBuckets - 1) hi = 0x7f800000u;
    const float small = __uint_as_float(lo | (negative ? 0x80000000u : 0u));
    const float large = __uint_as_float(hi | (negative ? 0x80000000u : 0u));
    // The count only grows with r: the bucket's lowest r is its smallest
    // magnitude when positive, its largest when negative.
    const int first = count_below(t->mid, negative ? large : small);
    const int last = count_below(t->mid, negative ? small : large);
    t->start[e] = uint8_t(first);
    steps = max(steps, last - first);
  }
  // The block's largest step count; the zero entry.
  __shared__ int block_steps;
  if (threadIdx.x == 0) block_steps = 0;
  __syncthreads();
  atomicMax(&block_steps, steps);
  __syncthreads();
  if (threadIdx.x == 0) {
    int best = 0;
    for (int k = 1; k < 256; ++k)
      if (fabsf(t->code[k]) < fabsf(t->code[best])) best = k;
    t->zero = best;
    t->steps = block_steps;
  }
  __syncthreads();
}

// ---- launch geometry ----

// num_blocks of kernels/backend.h, callable on the device.
__host__ __device__ __forceinline__ size_t blocks_of(size_t n, int blocksize) {
  return (n + size_t(blocksize) - 1) / size_t(blocksize);
}

// Blocks for a grid-stride kernel over `work` items of `per_block` each:
// enough to fill the device, no more than the work.
inline unsigned grid_for(size_t work, size_t per_block, int max_blocks) {
  const size_t blocks = (work + per_block - 1) / per_block;
  return unsigned(blocks < size_t(max_blocks) ? (blocks ? blocks : 1) : size_t(max_blocks));
}

}  // namespace lowbit::kernels::cuda
