// The CUDA 4-bit matmul ops of gemm_4bit.h. Which kernel runs:
//   m = 1, forward          gemv_4bit_kernel: one pass over the packed codes with 16-byte loads
//                           (in % 32 == 0, aligned); gemv_4bit_generic_kernel otherwise.
//   m = 1, input gradient   input_grad_gemv_kernel, rows split over blocks, partial sums reduced
//                           in a fixed order (in % 8 == 0); the cuBLAS route otherwise.
//   F16/BF16, 2 <= m <= 64  forward on sm_80+: gemm_4bit_mma_kernel, W decoded in registers
//                           straight into mma.sync operands (in % 32 == 0, aligned operands).
//                           Otherwise, and for the input gradient: gemm_4bit_wmma_kernel, W
//                           decoded tile by tile into shared memory, WMMA products. Both split K
//                           over blocks when the output alone cannot fill the GPU.
//   everything else         the weight dequantized into a stream-ordered temporary (whole rows:
//                           dequantize_4bit_flat_kernel at copy speed), then cuBLAS.
// No float atomics anywhere: every split is summed in a fixed order, so results repeat exactly.
#include "kernels/cuda/gemm_4bit.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "kernels/cuda/device_memory.h"
#include "kernels/error.h"

namespace lowbit::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // every kernel's block size
constexpr int kWarps = kThreads / 32;

// ---------------------------------------------------------------------------------------------
// Element conversions. Loads are exact; stores round to nearest even, once per output.

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Two floats rounded to a 16-bit type, packed with `first` in the low half (lower address).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float first, float second);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float first, float second) {
  const __half2 h = __floats2half2_rn(first, second);
  uint32_t u;
  memcpy(&u, &h, 4);
  return u;
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float first, float second) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(first, second);
  uint32_t u;
  memcpy(&u, &h, 4);
  return u;
}

// The 16 / sizeof(T) elements of a 16-byte vector as floats, in memory order.
__device__ __forceinline__ void unpack16(const uint4& v, float (&f)[4], float) {
  f[0] = __uint_as_float(v.x);
  f[1] = __uint_as_float(v.y);
  f[2] = __uint_as_float(v.z);
  f[3] = __uint_as_float(v.w);
}
__device__ __forceinline__ void unpack16(const uint4& v, float (&f)[8], __nv_bfloat16) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // a bfloat16 is the top half of the float with the same bits
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void unpack16(const uint4& v, float (&f)[8], __half) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 h;
    memcpy(&h, &w[i], 4);
    const float2 p = __half22float2(h);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

// Word i (0..3) of a 16-byte load; i is a constant after unrolling, so this is a register.
__device__ __forceinline__ uint32_t word(const uint4& q, int i) {
  return i == 0 ? q.x : (i == 1 ? q.y : (i == 2 ? q.z : q.w));
}

// A packed 32-bit word (4 bytes, lowest address first) holds 8 consecutive elements: byte j
// holds elements 2j (high nibble) and 2j+1 (low nibble). Decoding takes each code as a byte
// offset (4 * code) into a float table: one shift and mask per 4 codes, then one byte extract.
struct CodeOffsets {
  uint32_t even;  // byte j: 4 * code of element 2j
  uint32_t odd;   // byte j: 4 * code of element 2j+1
};
__device__ __forceinline__ CodeOffsets code_offsets(uint32_t w) {
  return {(w >> 2) & 0x3c3c3c3cu, (w << 2) & 0x3c3c3c3cu};
}
// table[code] for the code whose offset is byte j of `offsets`.
__device__ __forceinline__ float lookup(const float* table, uint32_t offsets, int j) {
  const uint32_t offset = __byte_perm(offsets, 0, 0x4440 + j);  // byte j, zero-extended
  return *reinterpret_cast<const float*>(reinterpret_cast<const char*>(table) + offset);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__host__ __device__ __forceinline__ size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

// ---------------------------------------------------------------------------------------------
// The weight's tables in shared memory (a kernel parameter indexed by a per-thread code would be
// serialised through the constant cache) and block scales.

struct Tables {
  float value[16];
  float nested[256];  // double quantization only
};

// Every thread of the block calls this; the caller synchronises before the tables are read.
__device__ __forceinline__ void load_tables(const Weight4bitDev& w, Tables& t) {
  if (threadIdx.x == 0) {
#pragma unroll
    for (int c = 0; c < 16; ++c) t.value[c] = w.value[c];
  }
  if (!w.absmax)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) t.nested[i] = __ldg(w.nested_code + i);
}

// A block scale in two steps: load_scale issues the global loads (early, with the codes they
// belong to), finish_scale applies the double-quantization table once it is needed.
struct RawScale {
  float a = 0.0f;      // absmax[b], or nested_absmax[b >> nested_shift]
  uint32_t code = 0;   // absmax_codes[b] (double quantization)
};

__device__ __forceinline__ RawScale load_scale(const Weight4bitDev& w, size_t b) {
  RawScale r;
  if (w.absmax) {
    r.a = __ldg(w.absmax + b);
  } else {
    r.code = __ldg(w.absmax_codes + b);
    r.a = __ldg(w.nested_absmax + (b >> w.nested_shift));
  }
  return r;
}

// dequantize_blockwise's arithmetic: a rounded product, then a rounded sum (no fma).
__device__ __forceinline__ float finish_scale(const Weight4bitDev& w, const Tables& t, RawScale r) {
  return w.absmax ? r.a : __fadd_rn(__fmul_rn(t.nested[r.code], r.a), w.offset);
}

// W at flat index f, exactly as the format defines it (the slow paths).
__device__ __forceinline__ float weight_at(const Weight4bitDev& w, const Tables& t, size_t f) {
  const uint32_t byte = __ldg(w.packed + (f >> 1));
  const uint32_t code = (f & 1) ? (byte & 15u) : (byte >> 4);
  return __fmul_rn(t.value[code], finish_scale(w, t, load_scale(w, f >> w.block_shift)));
}

// ---------------------------------------------------------------------------------------------
// gemv (m = 1): y[o] = sum_i W(o, i) x[i] (+ bias[o]).
//
// A chunk is 32 consecutive elements of a row: one 16-byte packed load. in % 32 == 0 makes every
// row start on a 16-byte boundary, and blocks (>= 32 elements, a power of two) hold whole chunks,
// so a chunk has one scale. A warp owns kGemvRows rows and reads each x vector from shared memory
// once for all of them (the shared-memory reads, not DRAM, bound this kernel otherwise). When the
// rows alone give too few blocks, `ksplit` warps share a row group, each taking every ksplit-th
// run of 32 chunks; their sums are added in a fixed order. Per chunk the products with the
// unscaled code values are summed first and scaled once (as the CPU gemv does per block).

// Rows per warp and the occupancy the kernel is compiled for. Two rows at four 256-thread blocks
// per SM (64 registers) against four rows at two blocks (96 registers), the H200, bf16 / fp16,
// batch 1, one run: 4096x4096 16.6 / 19.0 us against 18.6 / 20.3; 14336x4096 28.2 / 30.4
// against 33.5 / 30.9; 4096x14336 31.4 / 30.4 against 34.4 / 33.2 (four rows at three or four
// blocks per SM, or eight rows at one, were slower still).
constexpr int kGemvRows = 2;
constexpr int kGemvBlocksPerSm = 4;

// x lives in shared memory as 16-byte vectors. Lane l reads vector g of chunk c0 + l while its
// neighbours do the same; unswizzled, those vectors are 32 * sizeof(T) bytes apart and collide
// in the same banks. XOR-ing a vector's slot within its 128-byte line with the line number
// (mod 8) puts the 8 lanes of each 128-bit access phase in 8 different 16-byte bank groups.
__device__ __forceinline__ int swizzle(int v) { return (v & ~7) | ((v & 7) ^ ((v >> 3) & 7)); }

struct GemvChunk {
  uint4 q[kGemvRows];
  RawScale s[kGemvRows];
};

// Issues the loads of chunk c of rows row0.. (rows past the end and chunks past the row read
// nothing and are never used).
__device__ __forceinline__ void load_gemv_chunk(const Weight4bitDev& w, size_t row0, int c,
                                                int nchunks, GemvChunk& ch) {
#pragma unroll
  for (int r = 0; r < kGemvRows; ++r) {
    ch.q[r] = make_uint4(0, 0, 0, 0);
    ch.s[r] = RawScale{};
    const size_t row = row0 + r;
    if (c < nchunks && row < w.out_features) {
      const size_t f = row * w.in_features + size_t(c) * 32;
      ch.q[r] = __ldg(reinterpret_cast<const uint4*>(w.packed + f / 2));
      ch.s[r] = load_scale(w, f >> w.block_shift);
    }
  }
}

template <typename T>
__device__ __forceinline__ void accumulate_chunk(const Weight4bitDev& w, const Tables& t,
                                                 const uint4* xs, const GemvChunk& ch, int c,
                                                 float (&acc)[kGemvRows]) {
  constexpr int kVec = 16 / sizeof(T);  // x elements per 16-byte vector
  constexpr int kChunkVecs = 32 / kVec;
  float even[kGemvRows] = {}, odd[kGemvRows] = {};  // two chains for latency
#pragma unroll
  for (int g = 0; g < kChunkVecs; ++g) {
    float xf[kVec];
    unpack16(xs[swizzle(c * kChunkVecs + g)], xf, T{});  // chunk elements g*kVec ..
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r) {
#pragma unroll
      for (int p = 0; p < kVec / 2; ++p) {
        const int byte = g * (kVec / 2) + p;  // packed byte of chunk elements 2*byte, 2*byte+1
        const CodeOffsets co = code_offsets(word(ch.q[r], byte / 4));
        even[r] = fmaf(lookup(t.value, co.even, byte % 4), xf[2 * p], even[r]);
        odd[r] = fmaf(lookup(t.value, co.odd, byte % 4), xf[2 * p + 1], odd[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kGemvRows; ++r)
    acc[r] = fmaf(even[r] + odd[r], finish_scale(w, t, ch.s[r]), acc[r]);
}

// Block: kWarps / ksplit row groups of kGemvRows rows. Dynamic shared memory: x, in * sizeof(T)
// rounded up to whole 128-byte lines (the swizzle permutes vectors within a line).
template <typename T>
__global__ void __launch_bounds__(kThreads, kGemvBlocksPerSm)
    gemv_4bit_kernel(const T* __restrict__ x, const Weight4bitDev w, const T* __restrict__ bias,
                     T* __restrict__ y, int ksplit) {
  extern __shared__ uint4 xs[];
  __shared__ Tables tables;
  __shared__ float partial[kWarps][kGemvRows];
  constexpr int kVec = 16 / sizeof(T);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int groups = kWarps / ksplit;
  const int group = warp / ksplit, slice = warp % ksplit;
  const int nchunks = int(w.in_features / 32);
  const size_t row0 = (size_t(blockIdx.x) * groups + group) * kGemvRows;

  // The first weight loads go out before x is staged, so the two latencies overlap.
  int c = slice * 32 + lane;
  GemvChunk cur;
  load_gemv_chunk(w, row0, c, nchunks, cur);

  load_tables(w, tables);
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const int nvec = int(w.in_features / kVec);
  for (int v0 = tid; v0 < nvec; v0 += 4 * kThreads) {  // 4 loads in flight per thread
    uint4 tmp[4];
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (v0 + j * kThreads < nvec) tmp[j] = __ldg(xv + v0 + j * kThreads);
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (v0 + j * kThreads < nvec) xs[swizzle(v0 + j * kThreads)] = tmp[j];
  }
  __syncthreads();

  float acc[kGemvRows] = {};
  while (c < nchunks) {  // one chunk ahead in flight
    const int next = c + 32 * ksplit;
    GemvChunk nxt;
    load_gemv_chunk(w, row0, next, nchunks, nxt);
    accumulate_chunk<T>(w, tables, xs, cur, c, acc);
    cur = nxt;
    c = next;
  }

#pragma unroll
  for (int r = 0; r < kGemvRows; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r) partial[warp][r] = acc[r];
  }
  __syncthreads();
  if (tid < groups * kGemvRows) {
    const int g = tid / kGemvRows, r = tid % kGemvRows;
    const size_t row = (size_t(blockIdx.x) * groups + g) * kGemvRows + r;
    if (row < w.out_features) {
      float v = partial[g * ksplit][r];
      for (int s = 1; s < ksplit; ++s) v += partial[g * ksplit + s][r];
      if (bias) v += to_float(bias[row]);
      y[row] = from_float<T>(v);
    }
  }
}

// Any shape and alignment: a warp per row, one element per lane and step.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gemv_4bit_generic_kernel(const T* __restrict__ x, const Weight4bitDev w,
                             const T* __restrict__ bias, T* __restrict__ y) {
  __shared__ Tables tables;
  load_tables(w, tables);
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const size_t row = size_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= w.out_features) return;
  const size_t in = w.in_features;
  float acc = 0.0f;
  for (size_t i = lane; i < in; i += 32)
    acc = fmaf(weight_at(w, tables, row * in + i), to_float(x[i]), acc);
  acc = warp_sum(acc);
  if (lane == 0) {
    if (bias) acc += to_float(bias[row]);
    y[row] = from_float<T>(acc);
  }
}

// ---------------------------------------------------------------------------------------------
// Input gradient for m = 1: dx[i] = sum_o dy[o] W(o, i). A thread owns 8 columns (one 32-bit
// packed word per row; in % 8 == 0 keeps the words aligned and inside one block), a block 2048
// columns of the rows [r0, r1) given by blockIdx.y. dy of those rows is staged in shared memory.
// Each row's scale multiplies dy first: acc += value[code] * (scale * dy[o]). With more than one
// row split, sums go to ws[split][in] and reduce_splits_kernel adds them in split order.

constexpr int kIgCols = 8;
constexpr int kIgBatch = 16;   // rows whose loads are in flight together
constexpr int kDyRows = 1024;  // dy values staged at a time

template <typename T>
__global__ void __launch_bounds__(kThreads)
    input_grad_gemv_kernel(const T* __restrict__ dy, const Weight4bitDev w, T* __restrict__ dx,
                           float* __restrict__ ws, int rows_per_split) {
  __shared__ Tables tables;
  __shared__ float dys[kDyRows];
  load_tables(w, tables);
  const size_t in = w.in_features;
  const size_t col = (size_t(blockIdx.x) * kThreads + threadIdx.x) * kIgCols;
  const bool active = col < in;
  const size_t r0 = size_t(blockIdx.y) * rows_per_split;
  const size_t r1 = min_size(w.out_features, r0 + rows_per_split);
  float acc[kIgCols] = {};
  for (size_t p0 = r0; p0 < r1; p0 += kDyRows) {
    const int rows = int(min_size(kDyRows, r1 - p0));
    __syncthreads();  // the previous piece is consumed (and, the first time, the tables written)
    for (int i = threadIdx.x; i < rows; i += kThreads) dys[i] = to_float(dy[p0 + i]);
    __syncthreads();
    if (!active) continue;
    for (int j0 = 0; j0 < rows; j0 += kIgBatch) {
      uint32_t q[kIgBatch];
      RawScale s[kIgBatch];
#pragma unroll
      for (int j = 0; j < kIgBatch; ++j) {
        q[j] = 0;
        s[j] = RawScale{};
        if (j0 + j < rows) {
          const size_t f = (p0 + j0 + j) * in + col;
          q[j] = __ldg(reinterpret_cast<const uint32_t*>(w.packed + f / 2));
          s[j] = load_scale(w, f >> w.block_shift);
        }
      }
#pragma unroll
      for (int j = 0; j < kIgBatch; ++j) {
        if (j0 + j < rows) {
          const float t = __fmul_rn(finish_scale(w, tables, s[j]), dys[j0 + j]);
          const CodeOffsets co = code_offsets(q[j]);
#pragma unroll
          for (int b = 0; b < 4; ++b) {
            acc[2 * b] = fmaf(lookup(tables.value, co.even, b), t, acc[2 * b]);
            acc[2 * b + 1] = fmaf(lookup(tables.value, co.odd, b), t, acc[2 * b + 1]);
          }
        }
      }
    }
  }
  if (!active) return;
  if (ws) {  // 32-byte aligned: the workspace is, and in % 8 == col % 8 == 0
    float4* dst = reinterpret_cast<float4*>(ws + size_t(blockIdx.y) * in + col);
    dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
    dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
  } else {
#pragma unroll
    for (int j = 0; j < kIgCols; ++j) dx[col + j] = from_float<T>(acc[j]);
  }
}

// out[e] = sum over s of ws[s * count + e] in order s = 0, 1, ... (+ bias[e % ncols]), rounded once.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    reduce_splits_kernel(const float* __restrict__ ws, int splits, size_t count, size_t ncols,
                         const T* __restrict__ bias, T* __restrict__ out) {
  for (size_t e = size_t(blockIdx.x) * kThreads + threadIdx.x; e < count;
       e += size_t(gridDim.x) * kThreads) {
    float v = ws[e];
    for (int s = 1; s < splits; ++s) v += ws[size_t(s) * count + e];
    if (bias) v += to_float(bias[e % ncols]);
    out[e] = from_float<T>(v);
  }
}

// ---------------------------------------------------------------------------------------------
// Small batches on tensor cores: c[m, N] = a[m, K] * B, with B(k, n) = W(n, k) for the forward
// pass (a = x, N = out, K = in) and B(k, n) = W(k, n) for the input gradient (a = dy, N = in,
// K = out). A block computes all m rows (padded to 16 * MT) of kTileN = 128 columns, one warp per
// 16 columns, over the K steps [s_begin, s_end) of its split (blockIdx.y). Each K step decodes a
// tile of 8192 codes, one 16-byte packed chunk (32 codes along a W row) per thread, into shared
// memory in T: value * scale in float, then rounded to T (bitsandbytes' dequantize-then-matmul
// numerics). The next step's global loads are issued before the current step's products.

constexpr int kTileN = 128;
constexpr int kTileK = 64;
constexpr int kMaxFusedM = 64;

template <typename T, int MT, bool kInputGrad>
__global__ void __launch_bounds__(kThreads, 2)  // two blocks per SM: the grid assumes it
    gemm_4bit_wmma_kernel(const T* __restrict__ a, int m, const Weight4bitDev w,
                          const T* __restrict__ bias, T* __restrict__ c, float* __restrict__ ws,
                          int steps_per_split) {
  using namespace nvcuda;
  constexpr int kBM = 16 * MT;
  constexpr int kWRows = kInputGrad ? kTileK : kTileN;  // W rows in a decoded tile
  constexpr int kWCols = kInputGrad ? kTileN : kTileK;  // W columns in a decoded tile
  // Rows padded by 8 elements (16 bytes) so that fragment rows start in different banks; the
  // pitches stay multiples of 16 bytes and fragment pointers multiples of 32 bytes.
  constexpr int kLdA = kTileK + 8;
  constexpr int kLdW = kWCols + 8;
  constexpr int kChunksPerRow = kWCols / 32;
  static_assert(kWRows * kChunksPerRow == kThreads, "one 32-code chunk per thread");
  constexpr int kAVecs = kBM * kTileK / 8;  // 16-byte vectors in the a tile (8 per row)
  constexpr int kAPerThread = (kAVecs + kThreads - 1) / kThreads;
  using Layout = std::conditional_t<kInputGrad, wmma::row_major, wmma::col_major>;

  __shared__ __align__(128) uint16_t a_tile[kBM * kLdA];
  __shared__ __align__(128) uint16_t w_tile[kWRows * kLdW];  // [W row][W column]
  __shared__ __align__(128) float c_tile[kWarps][16 * 16];
  __shared__ Tables tables;
  const T* a_s = reinterpret_cast<const T*>(a_tile);
  const T* w_s = reinterpret_cast<const T*>(w_tile);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const size_t in = w.in_features, out = w.out_features;
  const size_t K = kInputGrad ? out : in, N = kInputGrad ? in : out;
  const size_t n0 = size_t(blockIdx.x) * kTileN;
  const int total_steps = int((K + kTileK - 1) / kTileK);
  const int s_begin = int(blockIdx.y) * steps_per_split;
  const int s_end = min(total_steps, s_begin + steps_per_split);
  const int wr = tid / kChunksPerRow, wc = (tid % kChunksPerRow) * 32;  // this thread's chunk

  uint4 wq = make_uint4(0, 0, 0, 0);
  RawScale wsc;
  bool wvalid = false;
  uint4 av[kAPerThread];

  // Global loads of step s into registers. K % 8 == 0 (checked on the host), so an 8-element
  // vector of a is entirely inside or outside [0, K); likewise in % 32 == 0 for W chunks.
  auto load = [&](int s) {
    const size_t k0 = size_t(s) * kTileK;
    const size_t o = kInputGrad ? k0 + wr : n0 + wr;  // W row
    const size_t i = kInputGrad ? n0 + wc : k0 + wc;  // W column of the chunk's first code
    wvalid = o < out && i < in;
    if (wvalid) {
      const size_t f = o * in + i;
      wq = __ldg(reinterpret_cast<const uint4*>(w.packed + f / 2));
      wsc = load_scale(w, f >> w.block_shift);
    }
#pragma unroll
    for (int j = 0; j < kAPerThread; ++j) {
      const int v = tid + j * kThreads;
      const int ar = v / 8, ak = (v % 8) * 8;
      av[j] = make_uint4(0, 0, 0, 0);
      if (v < kAVecs && ar < m && k0 + ak < K)
        av[j] = __ldg(reinterpret_cast<const uint4*>(a + size_t(ar) * K + k0 + ak));
    }
  };

  // Registers -> shared memory; out-of-range rows and columns become zeros in both tiles.
  auto store = [&]() {
    uint4* dst = reinterpret_cast<uint4*>(w_tile + wr * kLdW + wc);
    const float scale = wvalid ? finish_scale(w, tables, wsc) : 0.0f;
#pragma unroll
    for (int qi = 0; qi < 4; ++qi) {  // word qi: chunk elements 8*qi .. 8*qi+7
      const CodeOffsets co = code_offsets(word(wq, qi));
      uint32_t p[4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
        p[j] = pack2<T>(__fmul_rn(lookup(tables.value, co.even, j), scale),
                        __fmul_rn(lookup(tables.value, co.odd, j), scale));
      dst[qi] = wvalid ? make_uint4(p[0], p[1], p[2], p[3]) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int j = 0; j < kAPerThread; ++j) {
      const int v = tid + j * kThreads;
      if (v < kAVecs) *reinterpret_cast<uint4*>(a_tile + (v / 8) * kLdA + (v % 8) * 8) = av[j];
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) wmma::fill_fragment(acc[mt], 0.0f);

  if (s_begin < s_end) load(s_begin);
  load_tables(w, tables);
  __syncthreads();
  for (int s = s_begin; s < s_end; ++s) {
    store();
    __syncthreads();
    if (s + 1 < s_end) load(s + 1);
#pragma unroll
    for (int kk = 0; kk < kTileK / 16; ++kk) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, Layout> b;
      // B(k, n) of this warp's 16 columns: w_tile[n][k] (forward) or w_tile[k][n] (input grad).
      const T* bp = kInputGrad ? w_s + (kk * 16) * kLdW + warp * 16 : w_s + (warp * 16) * kLdW + kk * 16;
      wmma::load_matrix_sync(b, bp, kLdW);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::load_matrix_sync(fa, a_s + (mt * 16) * kLdA + kk * 16, kLdA);
        wmma::mma_sync(acc[mt], fa, b, acc[mt]);
      }
    }
    __syncthreads();
  }

  // Each warp writes its 16 columns through its own 16 x 16 staging tile.
  float* ct = c_tile[warp];
  const size_t col0 = n0 + warp * 16;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    wmma::store_matrix_sync(ct, acc[mt], 16, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 256; e += 32) {
      const int row = mt * 16 + e / 16;
      const size_t col = col0 + e % 16;
      if (row < m && col < N) {
        float v = ct[e];
        if (ws) {
          ws[(size_t(blockIdx.y) * m + row) * N + col] = v;
        } else {
          if (bias) v += to_float(bias[col]);
          c[size_t(row) * N + col] = from_float<T>(v);
        }
      }
    }
    __syncwarp();
  }
}

// ---------------------------------------------------------------------------------------------
// Small batches, forward, on sm_80 and later: the same numerics with the weight decoded in
// registers, straight into PTX mma.sync m16n8k16 operands. (WMMA hides its fragment layout, so a
// decoded weight reaches it only through shared memory and two barriers per K step: the kernel
// above, 1.4-1.5x slower at batch 16-64 on an H200; docs/PERFORMANCE.md.)
//
// In m16n8k16, lane (g, t) = (lane / 4, lane % 4) holds the A elements of rows g and g + 8 and the
// B elements of column g at the same k pairs of a 16-k slice: t and t + 4 (pair p = elements
// 2p, 2p + 1). A product sums over k, so the k of a step may be numbered in any order that A and
// B share. In a step of 128 k, lane t takes the 16 consecutive pairs 16t .. 16t + 15 of memory:
// pair 16t + j is slice j / 2, pair t + 4 (j % 2). A lane then reads its weight codes with one
// aligned 16-byte load per weight row (32 codes, inside one quantization block: blocks hold
// >= 32 elements and 32t is a multiple of 32) and its activations as four 16-byte vectors per row.
//
// A warp owns NT n-tiles (8 weight rows each) and all m rows (MT m-tiles); a block 8 warps along
// N. The weight goes from global memory to registers one step ahead. The activations of a step
// (16 MT rows x 128 k) are staged once per block in shared memory, double-buffered, loaded into
// registers two steps ahead: one barrier per step. Rows past m are zeros there; weight rows
// past out are clamped for loading and never stored.

constexpr int kMmaStepK = 128;
constexpr int kMmaPitch = 2 * kMmaStepK + 16;  // bytes per staged row: 16 mod 128, see below

// A staged row holds 16 chunks of 16 bytes; lane t reads chunks 4t .. 4t + 3. Chunk c is stored at
// slot c ^ ((c >> 3) << 1): the four lanes of a row then hit four different 16-byte bank groups,
// and the 16-byte row offset (pitch 16 mod 128) moves the other row of the same 8-lane phase
// onto the other four, so a 16-byte read is conflict-free.
__device__ __forceinline__ int chunk_slot(int c) { return c ^ ((c >> 3) << 1); }

__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1, __nv_bfloat16) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1, __half) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

template <int NT>
struct MmaWeights {  // a lane's codes and raw scales for one step
  uint4 q[NT];
  RawScale s[NT];
};

template <typename T, int MT, int NT>
__global__ void __launch_bounds__(kThreads, 2)
    gemm_4bit_mma_kernel(const T* __restrict__ a, int m, const Weight4bitDev w,
                         const T* __restrict__ bias, T* __restrict__ c, float* __restrict__ ws,
                         int steps_per_split) {
  constexpr int kRows = 16 * MT;
  constexpr int kChunks = kRows * 16;                 // 16-byte chunks of a staged step
  constexpr int kChunksPerThread = kChunks / kThreads;
  static_assert(kChunks % kThreads == 0, "whole chunks per thread");
  __shared__ __align__(16) unsigned char a_stage[2][kRows * kMmaPitch];
  __shared__ Tables tables;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  const size_t in = w.in_features, out = w.out_features;
  const size_t n_warp = (size_t(blockIdx.x) * kWarps + warp) * (NT * 8);
  const int total_steps = int(in / kMmaStepK);
  const int s_begin = int(blockIdx.y) * steps_per_split;
  const int s_end = min(total_steps, s_begin + steps_per_split);

  size_t wflat[NT];  // flat index of the lane's first code in each n-tile's row, at step 0
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) wflat[nt] = min_size(n_warp + nt * 8 + g, out - 1) * in + 32 * t;
  auto load_w = [&](int s, MmaWeights<NT>& mw) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const size_t f = wflat[nt] + size_t(s) * kMmaStepK;
      mw.q[nt] = __ldg(reinterpret_cast<const uint4*>(w.packed + f / 2));
      mw.s[nt] = load_scale(w, f >> w.block_shift);
    }
  };
  uint4 av[kChunksPerThread];  // a later step's activations, on their way to shared memory
  auto load_a = [&](int s) {
#pragma unroll
    for (int j = 0; j < kChunksPerThread; ++j) {
      const int i = tid + j * kThreads, row = i / 16, chunk = i % 16;
      av[j] = row < m ? __ldg(reinterpret_cast<const uint4*>(
                            a + size_t(row) * in + size_t(s) * kMmaStepK + 8 * chunk))
                      : make_uint4(0, 0, 0, 0);
    }
  };
  auto store_a = [&](unsigned char* stage) {
#pragma unroll
    for (int j = 0; j < kChunksPerThread; ++j) {
      const int i = tid + j * kThreads, row = i / 16, chunk = i % 16;
      *reinterpret_cast<uint4*>(stage + row * kMmaPitch + 16 * chunk_slot(chunk)) = av[j];
    }
  };

  float acc[MT][NT][4] = {};
  auto compute = [&](const MmaWeights<NT>& mw, const unsigned char* stage) {
    float scale[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) scale[nt] = finish_scale(w, tables, mw.s[nt]);
#pragma unroll
    for (int q = 0; q < 4; ++q) {  // 16-byte chunk 4t + q: slices 2q and 2q + 1
      uint32_t b[NT][4];  // b[nt][j]: pair 16t + 4q + j of the lane's weight row, rounded to T
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const CodeOffsets co = code_offsets(word(mw.q[nt], q));
#pragma unroll
        for (int j = 0; j < 4; ++j)
          b[nt][j] = pack2<T>(__fmul_rn(lookup(tables.value, co.even, j), scale[nt]),
                              __fmul_rn(lookup(tables.value, co.odd, j), scale[nt]));
      }
      const int slot = 16 * chunk_slot(4 * t + q);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint4 lo = *reinterpret_cast<const uint4*>(stage + (16 * mt + g) * kMmaPitch + slot);
        const uint4 hi =
            *reinterpret_cast<const uint4*>(stage + (16 * mt + g + 8) * kMmaPitch + slot);
#pragma unroll
        for (int kk = 0; kk < 2; ++kk) {
          const uint32_t fa[4] = {word(lo, 2 * kk), word(hi, 2 * kk), word(lo, 2 * kk + 1),
                                  word(hi, 2 * kk + 1)};
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
            mma_16816(acc[mt][nt], fa, b[nt][2 * kk], b[nt][2 * kk + 1], T{});
        }
      }
    }
  };

  // Step s computes from a_stage[buf] while step s + 1's weights and step s + 2's activations
  // are on their way; step s + 1's activations (loaded during step s - 1) are stored after it.
  MmaWeights<NT> cur, next;
  if (s_begin < s_end) {
    load_w(s_begin, cur);
    load_a(s_begin);
  }
  load_tables(w, tables);
  if (s_begin < s_end) store_a(a_stage[0]);
  if (s_begin + 1 < s_end) load_a(s_begin + 1);
  __syncthreads();
  for (int s = s_begin; s < s_end; ++s) {
    const int buf = (s - s_begin) & 1;
    const bool more = s + 1 < s_end;
    if (more) load_w(s + 1, next);
    compute(cur, a_stage[buf]);
    if (more) store_a(a_stage[buf ^ 1]);  // read last in step s - 1, before the barrier
    if (s + 2 < s_end) load_a(s + 2);
    __syncthreads();
    if (more) cur = next;
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = 16 * mt + g + 8 * (e / 2);
        const size_t col = n_warp + nt * 8 + 2 * t + e % 2;
        if (row >= m || col >= out) continue;
        float v = acc[mt][nt][e];
        if (ws) {
          ws[(size_t(blockIdx.y) * m + row) * out + col] = v;
        } else {
          if (bias) v += to_float(bias[col]);
          c[size_t(row) * out + col] = from_float<T>(v);
        }
      }
}

// ---------------------------------------------------------------------------------------------
// Large batches: out[r, j] = W(o0 + r, i0 + j) in T for r < rows, j < cols (row pitch cols), each
// value rounded once from value * scale. A thread writes 8 consecutive columns; with `vec` (4-byte
// aligned codes, 16-byte aligned output, cols % 8 == 0) an aligned group of 8 takes one 32-bit
// load and 16- or 32-byte stores.

constexpr int kDequantCols = 8;

// The 8 elements of packed word `word` (elements 8k .. 8k+7 of its block, scale s) rounded to T
// and stored at dst (16-byte aligned).
template <typename T>
__device__ __forceinline__ void store_decoded8(const Tables& t, uint32_t word, float s, T* dst) {
  const CodeOffsets co = code_offsets(word);
  float v[8];
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    v[2 * b] = __fmul_rn(lookup(t.value, co.even, b), s);
    v[2 * b + 1] = __fmul_rn(lookup(t.value, co.odd, b), s);
  }
  if constexpr (std::is_same_v<T, float>) {
    reinterpret_cast<float4*>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    *reinterpret_cast<uint4*>(dst) = make_uint4(pack2<T>(v[0], v[1]), pack2<T>(v[2], v[3]),
                                                pack2<T>(v[4], v[5]), pack2<T>(v[6], v[7]));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    dequantize_4bit_kernel(const Weight4bitDev w, size_t o0, size_t rows, size_t i0, size_t cols,
                           T* __restrict__ out, bool vec) {
  __shared__ Tables tables;
  load_tables(w, tables);
  __syncthreads();
  const size_t j = (size_t(blockIdx.x) * kThreads + threadIdx.x) * kDequantCols;
  if (j >= cols) return;
  for (size_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const size_t f = (o0 + r) * w.in_features + i0 + j;
    T* dst = out + r * cols + j;
    if (vec && (f & 7) == 0 && j + kDequantCols <= cols) {
      const uint32_t word = __ldg(reinterpret_cast<const uint32_t*>(w.packed + f / 2));
      store_decoded8(tables, word, finish_scale(w, tables, load_scale(w, f >> w.block_shift)),
                     dst);
    } else {
      const size_t n = min_size(kDequantCols, cols - j);
      for (size_t e = 0; e < n; ++e) dst[e] = from_float<T>(weight_at(w, tables, f + e));
    }
  }
}

// The same values for a run of whole rows, which is one contiguous range of the flat weight:
// out[e] = W at flat index first + e, for e < count, with first and count multiples of 8 (and
// the codes 4-byte, out 16-byte aligned). Persistent blocks load the tables once and stride over
// 8-element words, kDequantWords of them in flight per thread (their code and scale loads are
// issued before any is decoded); a warp reads 128 contiguous bytes and writes 512 (16-bit T).
constexpr int kDequantWords = 4;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    dequantize_4bit_flat_kernel(const Weight4bitDev w, size_t first, size_t count,
                                T* __restrict__ out) {
  __shared__ Tables tables;
  load_tables(w, tables);
  __syncthreads();
  const uint32_t* words = reinterpret_cast<const uint32_t*>(w.packed + first / 2);
  const size_t nwords = count / 8, stride = size_t(gridDim.x) * kThreads;
  for (size_t u0 = size_t(blockIdx.x) * kThreads + threadIdx.x; u0 < nwords;
       u0 += stride * kDequantWords) {
    uint32_t q[kDequantWords];
    RawScale s[kDequantWords];
#pragma unroll
    for (int k = 0; k < kDequantWords; ++k) {
      const size_t u = u0 + size_t(k) * stride;
      if (u < nwords) {
        q[k] = __ldg(words + u);
        s[k] = load_scale(w, (first + 8 * u) >> w.block_shift);
      }
    }
#pragma unroll
    for (int k = 0; k < kDequantWords; ++k) {
      const size_t u = u0 + size_t(k) * stride;
      if (u < nwords) store_decoded8(tables, q[k], finish_scale(w, tables, s[k]), out + 8 * u);
    }
  }
}

// y[r, o] = bias[o]: cuBLAS then adds the product with beta = 1, in float, and rounds once.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    broadcast_bias_kernel(const T* __restrict__ bias, size_t n, size_t count, T* __restrict__ y) {
  for (size_t e = size_t(blockIdx.x) * kThreads + threadIdx.x; e < count;
       e += size_t(gridDim.x) * kThreads)
    y[e] = bias[e % n];
}

// ---------------------------------------------------------------------------------------------
// Host side: errors, per-device state, launches.

void check_cuda(cudaError_t err, const char* op, const char* call) {
  if (err != cudaSuccess) fail("lowbit: ", op, ": ", call, " failed: ", cudaGetErrorString(err));
}

void check_launch(const char* op, const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    fail("lowbit: ", op, ": launching ", kernel, " failed: ", cudaGetErrorString(err));
}

void check_blas(cublasStatus_t status, const char* op, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail("lowbit: ", op, ": ", call, " failed: ", cublasGetStatusString(status));
}

// Temporaries: a dequantized weight chunk (at most this many bytes) and split-K partial sums.
constexpr size_t kDequantBudget = size_t(256) << 20;

template <typename T>
constexpr int type_index() {
  return std::is_same_v<T, float> ? 0 : (std::is_same_v<T, __half> ? 1 : 2);
}

// One per device, created on first use and never destroyed: destroying cuBLAS handles from a
// static destructor can run after the CUDA runtime has shut down.
struct DeviceState {
  int sms = 0;
  int cc_major = 0;                         // compute capability
  int smem_optin = 0;                       // shared memory a block may opt in to (bytes)
  std::map<const void*, int> resident;      // kernel -> blocks per SM (kThreads, static smem)
  int gemv_max_dynamic[3] = {-1, -1, -1};   // per element type, once the attribute is set
  cublasHandle_t blas = nullptr;
};

std::mutex& state_mutex() {
  static std::mutex* m = new std::mutex;
  return *m;
}

DeviceState& device_state(const char* op) {
  int device = 0;
  check_cuda(cudaGetDevice(&device), op, "cudaGetDevice");
  static auto* states = new std::vector<std::unique_ptr<DeviceState>>;
  std::lock_guard<std::mutex> lock(state_mutex());
  if (states->size() <= size_t(device)) states->resize(size_t(device) + 1);
  auto& s = (*states)[size_t(device)];
  if (!s) {
    auto fresh = std::make_unique<DeviceState>();
    check_cuda(cudaDeviceGetAttribute(&fresh->sms, cudaDevAttrMultiProcessorCount, device), op,
               "cudaDeviceGetAttribute(MultiProcessorCount)");
    check_cuda(cudaDeviceGetAttribute(&fresh->cc_major, cudaDevAttrComputeCapabilityMajor, device),
               op, "cudaDeviceGetAttribute(ComputeCapabilityMajor)");
    check_cuda(cudaDeviceGetAttribute(&fresh->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                      device),
               op, "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
    s = std::move(fresh);
  }
  return *s;
}

// C = A op B through cuBLAS (column-major view), one handle per device, used under the mutex.
// F32 computes in pedantic float32 (never TF32); F16 / BF16 in float32 with split-K partial sums
// kept in float32 (reduced-precision reductions would round an output more than once).
template <typename T>
void blas_gemm(DeviceState& d, cudaStream_t stream, const char* op, cublasOperation_t ta,
               cublasOperation_t tb, int rows, int cols, int depth, const T* A, int lda,
               const T* B, int ldb, float beta, T* C, int ldc) {
  const cudaDataType_t type = std::is_same_v<T, float>    ? CUDA_R_32F
                              : std::is_same_v<T, __half> ? CUDA_R_16F
                                                          : CUDA_R_16BF;
  const cublasComputeType_t compute =
      std::is_same_v<T, float> ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
  const float alpha = 1.0f;
  std::lock_guard<std::mutex> lock(state_mutex());
  if (!d.blas) {
    cublasHandle_t h = nullptr;
    check_blas(cublasCreate(&h), op, "cublasCreate");
    const cublasStatus_t mode = cublasSetMathMode(
        h, cublasMath_t(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
    if (mode != CUBLAS_STATUS_SUCCESS) {
      static_cast<void>(cublasDestroy(h));
      check_blas(mode, op, "cublasSetMathMode");
    }
    d.blas = h;
  }
  check_blas(cublasSetStream(d.blas, stream), op, "cublasSetStream");
  check_blas(cublasGemmEx(d.blas, ta, tb, rows, cols, depth, &alpha, A, type, lda, B, type, ldb,
                          &beta, C, type, ldc, compute, CUBLAS_GEMM_DEFAULT),
             op, "cublasGemmEx");
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

unsigned grid_for(size_t count, const DeviceState& d) {  // grid-stride kernels
  const size_t blocks = (count + kThreads - 1) / kThreads;
  return unsigned(min_size(blocks, size_t(d.sms) * 16));
}

void check_args(const char* op, size_t m, const Weight4bitDev& w, DType dtype, const void* in_ptr,
                const void* out_ptr) {
  LOWBIT_CHECK(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16, op, ": dtype ",
               dtype_name(dtype), " is not supported (F32, F16 or BF16)");
  LOWBIT_CHECK(m >= 1 && m <= size_t(INT_MAX), op, ": m = ", m, " must be in [1, 2^31)");
  LOWBIT_CHECK(w.out_features >= 1 && w.out_features <= size_t(INT_MAX) && w.in_features >= 1 &&
                   w.in_features <= size_t(INT_MAX),
               op, ": weight shape [", w.out_features, ", ", w.in_features,
               "] must have sides in [1, 2^31)");
  LOWBIT_CHECK(w.block_shift >= 5 && w.block_shift <= 12, op, ": block_shift ", w.block_shift,
               " is outside [5, 12] (block sizes 32 ... 4096)");
  LOWBIT_CHECK(w.packed, op, ": the weight has no packed codes");
  LOWBIT_CHECK(w.absmax || (w.absmax_codes && w.nested_absmax && w.nested_code), op,
               ": the weight needs absmax, or absmax_codes, nested_absmax and nested_code");
  LOWBIT_CHECK(w.absmax || (w.nested_shift >= 0 && w.nested_shift < 63), op, ": nested_shift ",
               w.nested_shift, " is out of range");
  LOWBIT_CHECK(in_ptr && out_ptr, op, ": input and output pointers must not be null");
}

template <typename T>
int gemv_max_dynamic_smem(DeviceState& d, const char* op) {
  std::lock_guard<std::mutex> lock(state_mutex());
  int& v = d.gemv_max_dynamic[type_index<T>()];
  if (v < 0) {
    // Always the device maximum: concurrent callers set the same value, so a launch never
    // races with a smaller setting.
    cudaFuncAttributes attr;
    check_cuda(cudaFuncGetAttributes(&attr, gemv_4bit_kernel<T>), op, "cudaFuncGetAttributes");
    const int max_dynamic = d.smem_optin - int(attr.sharedSizeBytes);
    check_cuda(cudaFuncSetAttribute(gemv_4bit_kernel<T>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, max_dynamic),
               op, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    v = max_dynamic;
  }
  return v;
}

template <typename T>
void run_gemv(DeviceState& d, const T* x, const Weight4bitDev& w, const T* bias, T* y,
              cudaStream_t stream, const char* op) {
  const size_t in = w.in_features, out = w.out_features;
  // The swizzle permutes vectors within 128-byte lines, so the buffer holds whole lines.
  const size_t smem = (in * sizeof(T) + 127) / 128 * 128;
  const bool fast = in % 32 == 0 && aligned(x, 16) && aligned(w.packed, 16) &&
                    smem <= size_t(gemv_max_dynamic_smem<T>(d, op));
  if (!fast) {
    const unsigned blocks = unsigned((out + kWarps - 1) / kWarps);
    gemv_4bit_generic_kernel<T><<<blocks, kThreads, 0, stream>>>(x, w, bias, y);
    check_launch(op, "gemv_4bit_generic_kernel");
    return;
  }
  // Split K within a block only while the rows alone give fewer than two blocks per SM, and
  // only while every slice still has a chunk for each lane.
  const int nchunks = int(in / 32);
  auto blocks_for = [&](int ksplit) {
    const size_t rows_per_block = size_t(kWarps / ksplit) * kGemvRows;
    return (out + rows_per_block - 1) / rows_per_block;
  };
  int ksplit = 1;
  while (ksplit < kWarps && blocks_for(ksplit) < size_t(2 * d.sms) && 64 * ksplit <= nchunks)
    ksplit *= 2;
  gemv_4bit_kernel<T><<<unsigned(blocks_for(ksplit)), kThreads, smem, stream>>>(x, w, bias, y,
                                                                                 ksplit);
  check_launch(op, "gemv_4bit_kernel");
}

template <typename T>
void run_reduce(DeviceState& d, const float* ws, int splits, size_t count, size_t ncols,
                const T* bias, T* out, cudaStream_t stream, const char* op) {
  reduce_splits_kernel<T><<<grid_for(count, d), kThreads, 0, stream>>>(ws, splits, count, ncols,
                                                                        bias, out);
  check_launch(op, "reduce_splits_kernel");
}

template <typename T>
void run_input_grad_gemv(DeviceState& d, const T* dy, const Weight4bitDev& w, T* dx,
                         cudaStream_t stream, const char* op) {
  const size_t in = w.in_features, out = w.out_features;
  const size_t col_blocks = (in + kThreads * kIgCols - 1) / (kThreads * kIgCols);
  // About four blocks per SM, but at most out / 32 splits, so that the partial sums (4 bytes
  // per split and column) stay within a quarter of the packed weight's bytes. A split has a
  // multiple of kIgBatch rows.
  const size_t target = std::max<size_t>(
      1, min_size((size_t(4 * d.sms) + col_blocks - 1) / col_blocks, out / 32));
  size_t rows = (out + target - 1) / target;
  rows = (rows + kIgBatch - 1) / kIgBatch * kIgBatch;
  const size_t splits = (out + rows - 1) / rows;  // <= target, so it fits gridDim.y
  const dim3 grid{unsigned(col_blocks), unsigned(splits)};
  if (splits == 1) {
    input_grad_gemv_kernel<T><<<grid, kThreads, 0, stream>>>(dy, w, dx, nullptr, int(rows));
    check_launch(op, "input_grad_gemv_kernel");
    return;
  }
  DeviceScratch ws(splits * in * sizeof(float), stream);
  input_grad_gemv_kernel<T><<<grid, kThreads, 0, stream>>>(dy, w, dx, ws.as<float>(), int(rows));
  check_launch(op, "input_grad_gemv_kernel");
  run_reduce<T>(d, ws.as<float>(), int(splits), in, in, nullptr, dx, stream, op);
}

// Blocks of `kernel` resident per SM at kThreads threads and no dynamic shared memory (cached).
int resident_blocks(DeviceState& d, const void* kernel, const char* op) {
  std::lock_guard<std::mutex> lock(state_mutex());
  const auto it = d.resident.find(kernel);
  if (it != d.resident.end()) return it->second;
  int blocks = 0;
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, 0), op,
             "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  blocks = std::max(blocks, 1);
  d.resident.emplace(kernel, blocks);
  return blocks;
}

// How the K steps of a tensor-core kernel are split over blocks (blockIdx.y).
struct KSplit {
  size_t splits = 1, steps = 1;  // blocks along K, and K steps per block
};

// Equal blocks run in waves of `slots` (resident blocks on the whole GPU), and a block costs its
// steps plus about two for its prologue (first loads) and epilogue (partial sums out), so the
// kernel takes about waves x (steps + 2): the split count that makes that least wins, the
// smallest on ties. At most K / (16 m) splits: the float partial sums (4 bytes per split and
// output, written and read again) then stay within half the packed weight's bytes.
KSplit choose_split(size_t n_blocks, size_t total_steps, size_t slots, size_t k, size_t m) {
  const size_t most = min_size(total_steps, std::max<size_t>(1, k / (16 * m)));
  KSplit best{1, total_steps};
  size_t best_cost = SIZE_MAX;
  for (size_t splits = 1; splits <= most; ++splits) {
    const size_t steps = (total_steps + splits - 1) / splits;
    if ((total_steps + steps - 1) / steps != splits) continue;  // a smaller count does the same
    const size_t cost = (n_blocks * splits + slots - 1) / slots * (steps + 2);
    if (cost < best_cost) {
      best_cost = cost;
      best = {splits, steps};
    }
  }
  return best;
}

template <typename T, int MT, bool kInputGrad>
void launch_wmma(dim3 grid, const T* a, int m, const Weight4bitDev& w, const T* bias, T* c,
                 float* ws, int steps_per_split, cudaStream_t stream, const char* op) {
  gemm_4bit_wmma_kernel<T, MT, kInputGrad>
      <<<grid, kThreads, 0, stream>>>(a, m, w, bias, c, ws, steps_per_split);
  check_launch(op, "gemm_4bit_wmma_kernel");
}

// The tensor-core path (F16 / BF16, 2 <= m <= kMaxFusedM); the caller checked its conditions.
template <typename T, bool kInputGrad>
void run_wmma(DeviceState& d, const T* a, size_t m, const Weight4bitDev& w, const T* bias, T* c,
              cudaStream_t stream, const char* op) {
  const size_t K = kInputGrad ? w.out_features : w.in_features;
  const size_t N = kInputGrad ? w.in_features : w.out_features;
  const size_t n_blocks = (N + kTileN - 1) / kTileN;
  const size_t total_steps = (K + kTileK - 1) / kTileK;
  // The kernel's launch bounds give two blocks per SM.
  const KSplit split = choose_split(n_blocks, total_steps, size_t(2 * d.sms), K, m);
  const size_t splits = split.splits, steps_per_split = split.steps;
  const dim3 grid{unsigned(n_blocks), unsigned(splits)};
  std::unique_ptr<DeviceScratch> ws;
  if (splits > 1) ws = std::make_unique<DeviceScratch>(splits * m * N * sizeof(float), stream);
  float* wsp = ws ? ws->as<float>() : nullptr;
  const int mi = int(m), sps = int(steps_per_split);
  if (m <= 16)
    launch_wmma<T, 1, kInputGrad>(grid, a, mi, w, bias, c, wsp, sps, stream, op);
  else if (m <= 32)
    launch_wmma<T, 2, kInputGrad>(grid, a, mi, w, bias, c, wsp, sps, stream, op);
  else
    launch_wmma<T, 4, kInputGrad>(grid, a, mi, w, bias, c, wsp, sps, stream, op);
  if (ws) run_reduce<T>(d, wsp, int(splits), m * N, N, bias, c, stream, op);
}

template <typename T, int MT, int NT>
void launch_mma(DeviceState& d, const T* x, size_t m, const Weight4bitDev& w, const T* bias, T* y,
                cudaStream_t stream, const char* op) {
  const auto kernel = gemm_4bit_mma_kernel<T, MT, NT>;
  const size_t out = w.out_features, in = w.in_features;
  const size_t n_blocks = (out + kWarps * NT * 8 - 1) / (kWarps * NT * 8);
  const size_t slots =
      size_t(resident_blocks(d, reinterpret_cast<const void*>(kernel), op)) * size_t(d.sms);
  const KSplit split = choose_split(n_blocks, in / kMmaStepK, slots, in, m);
  std::unique_ptr<DeviceScratch> ws;
  if (split.splits > 1)
    ws = std::make_unique<DeviceScratch>(split.splits * m * out * sizeof(float), stream);
  float* wsp = ws ? ws->as<float>() : nullptr;
  kernel<<<dim3{unsigned(n_blocks), unsigned(split.splits)}, kThreads, 0, stream>>>(
      x, int(m), w, bias, y, wsp, int(split.steps));
  check_launch(op, "gemm_4bit_mma_kernel");
  if (ws) run_reduce<T>(d, wsp, int(split.splits), m * out, out, bias, y, stream, op);
}

// The register-decode tensor-core path (F16 / BF16, 2 <= m <= kMaxFusedM, sm_80+); the caller
// checked its conditions. n-tiles per warp shrink as m grows, to bound the registers.
template <typename T>
void run_mma(DeviceState& d, const T* x, size_t m, const Weight4bitDev& w, const T* bias, T* y,
             cudaStream_t stream, const char* op) {
  if (m <= 16)
    launch_mma<T, 1, 4>(d, x, m, w, bias, y, stream, op);
  else if (m <= 32)
    launch_mma<T, 2, 3>(d, x, m, w, bias, y, stream, op);
  else if (m <= 48)
    launch_mma<T, 3, 2>(d, x, m, w, bias, y, stream, op);
  else
    launch_mma<T, 4, 2>(d, x, m, w, bias, y, stream, op);
}

template <typename T>
void run_dequantize(const DeviceState& d, const Weight4bitDev& w, size_t o0, size_t rows,
                    size_t i0, size_t cols, T* out, cudaStream_t stream, const char* op) {
  const size_t in = w.in_features;
  if (i0 == 0 && cols == in && (o0 * in) % 8 == 0 && (rows * in) % 8 == 0 &&
      aligned(w.packed, 4) && aligned(out, 16)) {
    const size_t threads = (rows * in / 8 + kDequantWords - 1) / kDequantWords;
    const unsigned blocks = unsigned(
        min_size((threads + kThreads - 1) / kThreads, size_t(d.sms) * (2048 / kThreads)));
    dequantize_4bit_flat_kernel<T><<<blocks, kThreads, 0, stream>>>(w, o0 * in, rows * in, out);
    check_launch(op, "dequantize_4bit_flat_kernel");
    return;
  }
  const bool vec = aligned(w.packed, 4) && aligned(out, 16) && cols % kDequantCols == 0;
  const size_t per_block = size_t(kThreads) * kDequantCols;
  const dim3 grid{unsigned((cols + per_block - 1) / per_block), unsigned(min_size(rows, 65535))};
  dequantize_4bit_kernel<T><<<grid, kThreads, 0, stream>>>(w, o0, rows, i0, cols, out, vec);
  check_launch(op, "dequantize_4bit_kernel");
}

// y = x W^T (+ bias) through a dequantized copy of W, a band of rows at a time.
template <typename T>
void run_forward_blas(DeviceState& d, const T* x, size_t m, const Weight4bitDev& w, const T* bias,
                      T* y, cudaStream_t stream, const char* op) {
  const size_t in = w.in_features, out = w.out_features;
  const size_t band = min_size(out, std::max<size_t>(1, kDequantBudget / (in * sizeof(T))));
  DeviceScratch wd(band * in * sizeof(T), stream);
  if (bias) {
    broadcast_bias_kernel<T><<<grid_for(m * out, d), kThreads, 0, stream>>>(bias, out, m * out, y);
    check_launch(op, "broadcast_bias_kernel");
  }
  for (size_t o0 = 0; o0 < out; o0 += band) {
    const size_t rows = min_size(band, out - o0);
    run_dequantize<T>(d, w, o0, rows, 0, in, wd.as<T>(), stream, op);
    // Column-major: y^T[out, m] (band rows) = Wd^T-as-stored (Wd [rows, in] row-major) * x^T.
    blas_gemm<T>(d, stream, op, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(m), int(in), wd.as<T>(),
                 int(in), x, int(in), bias ? 1.0f : 0.0f, y + o0, int(out));
  }
}

// dx = dy W through a dequantized copy of W, a band of columns at a time (each output is
// computed by one GEMM, so it is rounded once).
template <typename T>
void run_input_grad_blas(DeviceState& d, const T* dy, size_t m, const Weight4bitDev& w, T* dx,
                         cudaStream_t stream, const char* op) {
  const size_t in = w.in_features, out = w.out_features;
  const size_t band = min_size(in, std::max<size_t>(1, kDequantBudget / (out * sizeof(T))));
  DeviceScratch wd(band * out * sizeof(T), stream);
  for (size_t i0 = 0; i0 < in; i0 += band) {
    const size_t cols = min_size(band, in - i0);
    run_dequantize<T>(d, w, 0, out, i0, cols, wd.as<T>(), stream, op);
    // Column-major: dx^T[in, m] (band rows) = Wd-as-stored ([out, cols] row-major) * dy^T.
    blas_gemm<T>(d, stream, op, CUBLAS_OP_N, CUBLAS_OP_N, int(cols), int(m), int(out), wd.as<T>(),
                 int(cols), dy, int(out), 0.0f, dx + i0, int(in));
  }
}

template <typename T>
void forward(const T* x, size_t m, const Weight4bitDev& w, const T* bias, T* y,
             cudaStream_t stream) {
  constexpr const char* op = "gemm_4bit";
  DeviceState& d = device_state(op);
  if (m == 1) {
    run_gemv<T>(d, x, w, bias, y, stream, op);
    return;
  }
  if constexpr (!std::is_same_v<T, float>) {
    if (m <= size_t(kMaxFusedM) && w.in_features % 32 == 0 && aligned(x, 16)) {
      if (d.cc_major >= 8 && w.in_features % kMmaStepK == 0 && aligned(w.packed, 16)) {
        run_mma<T>(d, x, m, w, bias, y, stream, op);
        return;
      }
      if (aligned(w.packed, 16)) {
        run_wmma<T, false>(d, x, m, w, bias, y, stream, op);
        return;
      }
    }
  }
  run_forward_blas<T>(d, x, m, w, bias, y, stream, op);
}

template <typename T>
void input_grad(const T* dy, size_t m, const Weight4bitDev& w, T* dx, cudaStream_t stream) {
  constexpr const char* op = "gemm_4bit_input_grad";
  DeviceState& d = device_state(op);
  if (m == 1 && w.in_features % kIgCols == 0 && aligned(w.packed, 4)) {
    run_input_grad_gemv<T>(d, dy, w, dx, stream, op);
    return;
  }
  if constexpr (!std::is_same_v<T, float>) {
    if (m <= size_t(kMaxFusedM) && w.in_features % 32 == 0 && w.out_features % 8 == 0 &&
        aligned(dy, 16) && aligned(w.packed, 16)) {
      run_wmma<T, true>(d, dy, m, w, nullptr, dx, stream, op);
      return;
    }
  }
  run_input_grad_blas<T>(d, dy, m, w, dx, stream, op);
}

template <typename T>
struct Tag {
  using type = T;
};

template <typename Fn>
void dispatch(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::F32: fn(Tag<float>{}); return;
    case DType::F16: fn(Tag<__half>{}); return;
    case DType::BF16: fn(Tag<__nv_bfloat16>{}); return;
    case DType::U8: break;
  }
}

}  // namespace

void gemm_4bit(const void* x, size_t m, const Weight4bitDev& w, const void* bias, void* y,
               DType dtype, cudaStream_t stream) {
  check_args("gemm_4bit", m, w, dtype, x, y);
  dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    forward<T>(static_cast<const T*>(x), m, w, static_cast<const T*>(bias), static_cast<T*>(y),
               stream);
  });
}

void gemm_4bit_input_grad(const void* dy, size_t m, const Weight4bitDev& w, void* dx, DType dtype,
                          cudaStream_t stream) {
  check_args("gemm_4bit_input_grad", m, w, dtype, dy, dx);
  dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    input_grad<T>(static_cast<const T*>(dy), m, w, static_cast<T*>(dx), stream);
  });
}

}  // namespace lowbit::kernels::cuda
