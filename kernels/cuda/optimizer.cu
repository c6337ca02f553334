// Optimizer steps on CUDA: the twin of kernels/cpu/optimizer_update.cpp with
// the rules of kernels/optimizer_rules.h and the decisions of step_rules.h, so
// a step gives the CPU's bits. The fused update gives each thread eight (or
// four) consecutive elements, so that a 256-element quantization block is one
// warp and its maxima need no barrier; the sums (norms, gradient statistics)
// follow the CPU's summation order exactly: sixteen lanes per block, blocks in
// chunks of 256 in double, chunks in order.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/rule_dispatch.h"

namespace lowbit::kernels::cuda {
namespace {

constexpr int kSumThreads = 256;
constexpr int kBlocksPerChunk = 256;  // as the CPU's sum_blocks
constexpr int kLanes = 16;

constexpr int kUpdateThreads = 256;

// One state of a step as the kernels see it.
template <bool kQuantized>
struct StateView {
  void* data;
  float* absmax;
  const CodeTable* table;  // shared memory copy (8-bit only)

  // N elements as stored (codes and their block's absmax, or floats): loaded
  // apart from decoding, so that a thread can have several loads in flight.
  using Elem = std::conditional_t<kQuantized, uint8_t, float>;
  template <int N>
  struct Stored {
    Elem v[N];
    float m;
  };
  // Elements [i, i + N) of block b (kChecked: as cuda::load_n).
  template <int N, bool kChecked, typename I>
  __device__ __forceinline__ void fetch(I b, I i, I n, Stored<N>& s) const {
    if constexpr (kQuantized) {
      load_bytes<N, kChecked>(static_cast<const uint8_t*>(data), i, n, s.v);
      s.m = absmax[b];
    } else {
      cuda::load_n<F32, N, kChecked>(static_cast<const float*>(data), i, n, s.v);
    }
  }
  template <int N>
  __device__ __forceinline__ void decode(const Stored<N>& s, float (&v)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) {
      if constexpr (kQuantized)
        v[k] = table->code[s.v[k]] * s.m;
      else
        v[k] = s.v[k];
    }
  }
  template <int N, bool kChecked, typename I>
  __device__ __forceinline__ void load_n(I b, I i, I n, float (&v)[N]) const {
    Stored<N> s;
    fetch<N, kChecked>(b, i, n, s);
    decode(s, v);
  }
  // `m` is the group's max |value|; codes encode value * (1 / m).
  template <int N, bool kChecked, typename I>
  __device__ __forceinline__ void store_n(I b, I i, I n, const float (&v)[N],
                                          float m, bool leader) const {
    if constexpr (kQuantized) {
      uint8_t c[N];
      if (m == 0.0f) {
#pragma unroll
        for (int k = 0; k < N; ++k) c[k] = uint8_t(table->zero);
      } else {
        encode_n(*table, v, 1.0f / m, c);
      }
      store_bytes<N, kChecked>(static_cast<uint8_t*>(data), i, n, c);
      if (leader) absmax[b] = m;
    } else {
      cuda::store_n<F32, N, kChecked>(static_cast<float*>(data), i, n, v);
    }
  }
};

// The step's code tables, copied into dynamic shared memory (8-bit states
// only: table_bytes of them); tables[1] is state2's.
extern __shared__ uint4 dynamic_shared[];

template <bool kQuantized, bool kTwoStates>
__device__ __forceinline__ const CodeTable* load_tables(const OptimizerPointers& op) {
  CodeTable* tables = reinterpret_cast<CodeTable*>(dynamic_shared);
  if constexpr (kQuantized) {
    load_code_table(op.table1, op.qmap1, &tables[0]);
    if constexpr (kTwoStates) load_code_table(op.table2, op.qmap2, &tables[1]);
  }
  return tables;
}

size_t table_bytes(const OptimizerPointers& op) {
  return op.quantized ? (op.state2 ? 2 : 1) * sizeof(CodeTable) : 0;
}

// A step's operands as a kernel reads them: the parameter, the gradient and
// the states (8-bit ones decoded with the tables in shared memory).
template <typename T, bool kQuantized, bool kTwoStates>
struct StepOperands {
  using Storage = typename T::Storage;
  Storage* param;
  const Storage* grad;
  StateView<kQuantized> s1, s2;

  __device__ StepOperands(const OptimizerPointers& op, const CodeTable* tables)
      : param(static_cast<Storage*>(op.param)),
        grad(static_cast<const Storage*>(op.grad)),
        s1{op.state1, op.absmax1, &tables[0]},
        s2{op.state2, op.absmax2, &tables[1]} {}

  // Elements [i, i + N) of block b, zeros at or past `end`; s2 stays 0
  // without a second state. kChecked: as cuda::load_n.
  template <int N, bool kChecked = true, typename I>
  __device__ __forceinline__ void load(I b, I i, I end, float (&p)[N],
                                       float (&g)[N], float (&v1)[N], float (&v2)[N]) const {
    load_n<T, N, kChecked>(param, i, end, p);
    load_n<T, N, kChecked>(grad, i, end, g);
    s1.template load_n<N, kChecked>(b, i, end, v1);
    if constexpr (kTwoStates) s2.template load_n<N, kChecked>(b, i, end, v2);
  }
  // Elements [i, i + N) of block b as loaded, before decoding (kChecked: as
  // cuda::load_n).
  template <int N>
  struct Fetched {
    float p[N], g[N];
    typename StateView<kQuantized>::template Stored<N> s1, s2;
  };
  template <int N, bool kChecked = true, typename I>
  __device__ __forceinline__ void fetch(I b, I i, I end, Fetched<N>& f) const {
    load_n<T, N, kChecked>(param, i, end, f.p);
    load_n<T, N, kChecked>(grad, i, end, f.g);
    s1.template fetch<N, kChecked>(b, i, end, f.s1);
    if constexpr (kTwoStates) s2.template fetch<N, kChecked>(b, i, end, f.s2);
  }
  // Writes the new parameter and states of [i, i + N) (block maxima m1, m2).
  template <int N, bool kChecked, typename I>
  __device__ __forceinline__ void store(I b, I i, I end, const float (&p)[N],
                                        const float (&v1)[N], const float (&v2)[N], float m1,
                                        float m2, bool leader) const {
    store_n<T, N, kChecked>(param, i, end, p);
    s1.template store_n<N, kChecked>(b, i, end, v1, m1, leader);
    if constexpr (kTwoStates) s2.template store_n<N, kChecked>(b, i, end, v2, m2, leader);
  }
};

// Threads per quantization block when each takes `per_thread` elements; a
// CUDA block has max(its threads, that).
int update_group(int blocksize, int per_thread) { return blocksize / per_thread; }

// Each thread updates N consecutive elements of a quantization block, and
// `groups` quantization blocks share a CUDA block (blockDim.x / (blocksize /
// N), passed by the host: a kernel argument holds no register across the
// loop, where the quotient computed here was spilled to local memory).
// Index: uint32_t when every element index fits (fewer registers), else
// size_t. `aligned`: every operand starts on a 16-byte boundary, so the blocks
// that lie wholly inside the tensor (all but maybe the last) are read and
// written with unchecked vector accesses.
template <typename T, typename Rule, bool kQuantized, bool kTwoStates, typename Index, int N,
          int kMaxThreads, int kMinBlocks>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocks)
    update_kernel(OptimizerPointers op, bool aligned, int groups, const StepSlot* slot,
                  StepFlags* flags) {
  if (flags->found_inf) return;
  __shared__ uint32_t scratch[2][3][32];
  const StepOperands<T, kQuantized, kTwoStates> ops(op, load_tables<kQuantized, kTwoStates>(op));
  const lb_optim_args a = slot->args;
  const Index n = Index(op.n);
  const int g = op.blocksize / N;
  const Index nb = Index(blocks_of(op.n, op.blocksize));
  const Index full = aligned ? n / Index(op.blocksize) : Index(0);  // blocks below are whole
  const Index group = Index(threadIdx.x) / Index(g), lane = Index(threadIdx.x) % Index(g);
  int parity = 0;
  for (Index first = Index(blockIdx.x) * Index(groups); first < nb;
       first += Index(gridDim.x) * Index(groups), ++parity) {
    const Index b = first + group;
    const bool active = b < nb, whole = b < full;
    const Index i = b * Index(op.blocksize) + lane * Index(N);
    float p[N] = {}, gr[N] = {}, s1[N] = {}, s2[N] = {};
    uint32_t mp = 0, m1 = 0, m2 = 0;
    const auto update = [&](int k) {
      const lb_optim_result r = Rule::apply(a, p[k], gr[k] * a.gnorm_scale, s1[k], s2[k]);
      p[k] = lb_apply_update(a, p[k], r.u);
      s1[k] = r.s1;
      s2[k] = r.s2;
      mp = max(mp, magnitude_bits(p[k]));
      m1 = max(m1, magnitude_bits(r.s1));
      if constexpr (kTwoStates) m2 = max(m2, magnitude_bits(r.s2));
    };
    if (whole) {
      ops.template load<N, false>(b, i, n, p, gr, s1, s2);
#pragma unroll
      for (int k = 0; k < N; ++k) update(k);
    } else if (active) {
      ops.load(b, i, n, p, gr, s1, s2);
#pragma unroll
      for (int k = 0; k < N; ++k)
        if (i + Index(k) < n) update(k);
    }
    group_max3(mp, m1, m2, g, scratch, parity);
    if (!active) continue;
    if (mp >= kNonFinite || m1 >= kNonFinite || m2 >= kNonFinite) {
      if (lane == 0) atomicAdd(reinterpret_cast<unsigned long long*>(&flags->skipped_blocks), 1ull);
      continue;
    }
    const float f1 = __uint_as_float(m1), f2 = __uint_as_float(m2);
    if (whole)
      ops.template store<N, false>(b, i, n, p, s1, s2, f1, f2, lane == 0);
    else
      ops.template store<N, true>(b, i, n, p, s1, s2, f1, f2, lane == 0);
  }
}

// Chunk blockIdx.x of the blocks (kBlocksPerChunk of them), summed in the
// CPU's order: per block, sixteen float lanes (lane k takes elements k,
// k + 16, ... in turn), the lanes added in order from 0; then thread 0 adds
// the chunk's blocks in double in order. Four threads share a block, each
// holding four neighbouring lanes, so that a warp reads whole 64-byte runs of
// eight blocks at once. `fetch(b, e, count, f, unchecked)` loads elements
// [e, e + count) (count <= 4; none when 0) of block b into an F, and
// `add(f, count, x, y)` adds their terms to x[0..count) and y[0..count): a
// thread first issues the loads of kQuads quads, then adds them in order.
// With kCountNonFinite, y instead counts the blocks whose float sum x is not
// finite (the CPU's gradient check). A chunk of whole blocks on 16-byte
// aligned operands (`aligned`; every chunk but maybe the last) is read with
// unchecked loads (`unchecked` a std::true_type) and constant counts: fewer
// instructions for LAMB's norms pass, which is bound by issuing them.
constexpr int kQuad = 4;                            // lanes per thread
constexpr int kThreadsPerBlock = kLanes / kQuad;    // threads per block
constexpr int kBlocksAtOnce = kSumThreads / kThreadsPerBlock;
constexpr int kUnroll = 4;  // quads per thread in flight

template <bool kCountNonFinite, typename F, int kQuads = kUnroll, typename Fetch, typename Add>
__device__ __forceinline__ void chunk_sums(size_t n, int blocksize, bool aligned,
                                           const Fetch& fetch, const Add& add, double* partials) {
  __shared__ float xs[kBlocksPerChunk], ys[kBlocksPerChunk];
  const size_t nb = blocks_of(n, blocksize);
  const size_t chunk_first = size_t(blockIdx.x) * kBlocksPerChunk;
  const int t = int(threadIdx.x) % kThreadsPerBlock, slot = int(threadIdx.x) / kThreadsPerBlock;
  const auto rounds = [&](auto whole) {
    constexpr bool kWhole = decltype(whole)::value;
    for (int round = 0; round < kBlocksPerChunk; round += kBlocksAtOnce) {
      const size_t b = chunk_first + size_t(round + slot);
      float xl[kQuad] = {}, yl[kQuad] = {};
      if (kWhole || b < nb) {
        const size_t begin = b * size_t(blocksize);
        const size_t len = kWhole ? size_t(blocksize) : min(n, begin + size_t(blocksize)) - begin;
        for (size_t j0 = size_t(t * kQuad); j0 < len; j0 += kLanes * kQuads) {
          F f[kQuads];
          int count[kQuads];
#pragma unroll
          for (int u = 0; u < kQuads; ++u) {
            const size_t j = j0 + size_t(u * kLanes);
            const size_t left = j < len ? len - j : 0;
            count[u] = kWhole || left >= size_t(kQuad) ? kQuad : int(left);
            fetch(b, begin + j, count[u], f[u], whole);
          }
#pragma unroll
          for (int u = 0; u < kQuads; ++u) add(f[u], count[u], xl, yl);
        }
      }
      // Lane k = 4 * (thread k / 4) + register k % 4, added in lane order.
      float x = 0.0f, y = 0.0f;
#pragma unroll
      for (int k = 0; k < kLanes; ++k) {
        x += __shfl_sync(0xffffffffu, xl[k % kQuad], k / kQuad, kThreadsPerBlock);
        y += __shfl_sync(0xffffffffu, yl[k % kQuad], k / kQuad, kThreadsPerBlock);
      }
      if (t == 0) {
        xs[round + slot] = x;
        ys[round + slot] = kCountNonFinite ? (magnitude_bits(x) >= kNonFinite ? 1.0f : 0.0f) : y;
      }
    }
  };
  if (aligned && chunk_first + kBlocksPerChunk <= n / size_t(blocksize))
    rounds(std::true_type{});
  else
    rounds(std::false_type{});
  __syncthreads();
  if (threadIdx.x == 0) {
    const size_t count = min(size_t(kBlocksPerChunk), nb - chunk_first);
    double dx = 0, dy = 0;
#pragma unroll 8
    for (size_t q = 0; q < count; ++q) {
      dx += xs[q];
      dy += ys[q];
    }
    partials[2 * blockIdx.x] = dx;
    partials[2 * blockIdx.x + 1] = dy;
  }
}

// Two quads in flight per thread and four blocks per SM (64 registers). On the
// H200 at 256M, LAMB8bit's whole step: 2.46 ms; four quads, 2-3 blocks per SM
// (80-99 registers): 2.62-2.68 ms; two quads, three blocks: 2.52 ms.
constexpr int kNormsUnroll = 2;

template <typename T, typename Rule, bool kQuantized, bool kTwoStates>
__global__ void __launch_bounds__(kSumThreads, 4)
    norms_kernel(OptimizerPointers op, bool aligned, const StepSlot* slot, const StepFlags* flags,
                 double* partials) {
  if (flags->found_inf) return;
  const StepOperands<T, kQuantized, kTwoStates> ops(op, load_tables<kQuantized, kTwoStates>(op));
  const lb_optim_args a = slot->args;
  using F = typename StepOperands<T, kQuantized, kTwoStates>::template Fetched<kQuad>;
  chunk_sums<false, F, kNormsUnroll>(
      op.n, op.blocksize, aligned,
      [&](size_t b, size_t e, int count, F& f, auto unchecked) {
        ops.template fetch<kQuad, !decltype(unchecked)::value>(b, e, e + size_t(count), f);
      },
      [&](const F& f, int count, float (&u_sq)[kQuad], float (&p_sq)[kQuad]) {
        float s1[kQuad], s2[kQuad] = {};
        ops.s1.decode(f.s1, s1);
        if constexpr (kTwoStates) ops.s2.decode(f.s2, s2);
#pragma unroll
        for (int k = 0; k < kQuad; ++k) {
          if (k >= count) break;
          const float u = Rule::apply(a, f.p[k], f.g[k] * a.gnorm_scale, s1[k], s2[k]).u;
          u_sq[k] += u * u;
          p_sq[k] += f.p[k] * f.p[k];
        }
      },
      partials);
}

// The check of a gradient without its sum (gradient_stats with sum = false)
// reads it once at memory speed, with two words in `check`: [0] set when an
// element is NaN or inf, [1] when one is finite but so large (at least
// `limit`, magnitude bits) that a block's float sum of squares might
// overflow. Only in that rare case does the exact sum (grad_sum_kernel in the
// CPU's order) decide, so that the decision stays the CPU's.
constexpr int kCheckThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kCheckThreads)
    grad_check_kernel(const typename T::Storage* grad, size_t n, uint32_t limit,
                      uint32_t* check) {
  constexpr int V = 16 / int(sizeof(typename T::Storage));  // elements per 16-byte load
  constexpr int kInFlight = 4;
  uint32_t m = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x * V;
  for (size_t first = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) * V; first < n;
       first += kInFlight * stride) {
    float v[kInFlight][V];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) load_n<T, V>(grad, first + u * stride, n, v[u]);
#pragma unroll
    for (int u = 0; u < kInFlight; ++u)
#pragma unroll
      for (int k = 0; k < V; ++k) m = max(m, magnitude_bits(v[u][k]));
  }
  // Elements past n read 0: they change no maximum.
  const bool bad = __any_sync(0xffffffffu, m >= kNonFinite);
  const bool large = __any_sync(0xffffffffu, m >= limit && m < kNonFinite);
  if (threadIdx.x % 32 == 0) {
    if (bad) atomicOr(&check[0], 1u);
    if (large) atomicOr(&check[1], 1u);
  }
}

// Whether the exact sums must run after grad_check_kernel.
__device__ __forceinline__ bool sums_needed(const uint32_t* check) {
  return check == nullptr || (check[0] == 0 && check[1] != 0);
}

template <typename T>
__global__ void __launch_bounds__(kSumThreads)
    grad_sum_kernel(const typename T::Storage* grad, size_t n, int blocksize, bool aligned,
                    double* partials, const uint32_t* check) {
  if (!sums_needed(check)) return;
  struct F {
    float g[kQuad];
  };
  chunk_sums<true, F>(
      n, blocksize, aligned,
      [&](size_t, size_t e, int count, F& f, auto unchecked) {
        load_n<T, kQuad, !decltype(unchecked)::value>(grad, e, e + size_t(count), f.g);
      },
      [&](const F& f, int count, float (&sq)[kQuad], float(&)[kQuad]) {
#pragma unroll
        for (int k = 0; k < kQuad; ++k)
          if (k < count) sq[k] += f.g[k] * f.g[k];
      },
      partials);
}

// Second half of a sum: the chunks in order, into the slot. `norms` selects
// (update_sq, param_sq) over (grad_sq, grad_nonfinite). The additions are one
// dependent chain (the CPU's order); the block stages the partials through
// shared memory so that the chain never waits on a global load.
constexpr int kFinishThreads = 1024;

__global__ void __launch_bounds__(kFinishThreads)
    finish_sums_kernel(const double* partials, size_t chunks, bool norms, StepSlot* slot,
                       const StepFlags* flags, const uint32_t* check = nullptr) {
  if (flags && flags->found_inf) return;
  if (!sums_needed(check)) {  // the check decided alone
    if (threadIdx.x == 0) {
      slot->grad_sq = 0;
      slot->grad_nonfinite = check[0];
    }
    return;
  }
  __shared__ double tile[2 * kFinishThreads];
  double x = 0, y = 0;
  for (size_t first = 0; first < chunks; first += kFinishThreads) {
    const size_t count = min(size_t(kFinishThreads), chunks - first);
    for (size_t k = threadIdx.x; k < 2 * count; k += blockDim.x) tile[k] = partials[2 * first + k];
    __syncthreads();
    if (threadIdx.x == 0) {
#pragma unroll 8
      for (size_t c = 0; c < count; ++c) {
        x += tile[2 * c];
        y += tile[2 * c + 1];
      }
    }
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  if (norms) {
    slot->update_sq = x;
    slot->param_sq = y;
  } else {
    slot->grad_sq = x;
    slot->grad_nonfinite = y != 0.0 ? 1u : 0u;
  }
}

// ---- step decisions ----

__global__ void clear_found_kernel(StepFlags* flags) { flags->found_inf = 0; }

__global__ void decide_kernel(ItemBatch batch, int skip_nonfinite, const StepSlot* slots,
                              StepFlags* flags) {
  const int k = int(threadIdx.x);
  if (!skip_nonfinite || k >= batch.count) return;
  const DeviceItem& item = batch.items[k];
  if (item.checked && slots[item.slot].grad_nonfinite) atomicOr(&flags->found_inf, 1u);
}

__global__ void apply_kernel(ItemBatch batch, int first_batch, StepSlot* slots, StepFlags* flags) {
  const int k = int(threadIdx.x);
  if (flags->found_inf) {
    if (first_batch && k == 0)
      atomicAdd(reinterpret_cast<unsigned long long*>(&flags->skipped_steps), 1ull);
    return;
  }
  if (k >= batch.count) return;
  const DeviceItem& item = batch.items[k];
  StepSlot& slot = slots[item.slot];
  const int64_t step = *item.step + 1;
  *item.step = step;
  slot.args = lb_step_args(item.hparams, step, 1.0);
  // Under SkipBlocks a non-finite gradient must not enter the history.
  if (item.hparams.percentile < 100 && item.checked && !slot.grad_nonfinite)
    slot.args.gnorm_scale =
        float(lb_percentile_scale(item.history, step, slot.grad_sq, item.hparams.percentile));
}

__global__ void scale_kernel(ItemBatch batch, StepSlot* slots, const StepFlags* flags) {
  const int k = int(threadIdx.x);
  if (flags->found_inf || k >= batch.count) return;
  const DeviceItem& item = batch.items[k];
  if (!lb_needs_norms(item.hparams)) return;
  StepSlot& slot = slots[item.slot];
  const double lr_scale =
      lb_norm_scale(item.hparams, slot.args.lr_step, slot.update_sq, slot.param_sq);
  if (lr_scale == 1.0) return;
  const float gnorm_scale = slot.args.gnorm_scale;
  slot.args = lb_step_args(item.hparams, *item.step, lr_scale);
  slot.args.gnorm_scale = gnorm_scale;
}

// Calls fn(T, Rule, quantized, two_states) as types for the operands.
template <typename Fn>
void dispatch_step(const OptimizerPointers& op, Fn&& fn) {
  dispatch_float(op.param_type, [&](auto type) {
    with_rule(op.rule, op.state2 != nullptr, [&](auto rule, auto two_states) {
      if (op.quantized)
        fn(type, rule, std::true_type{}, two_states);
      else
        fn(type, rule, std::false_type{}, two_states);
    });
  });
}

// Whether every operand of a step starts on a 16-byte boundary.
bool operands_aligned(const OptimizerPointers& op) {
  const uintptr_t addresses =
      reinterpret_cast<uintptr_t>(op.param) | reinterpret_cast<uintptr_t>(op.grad) |
      reinterpret_cast<uintptr_t>(op.state1) | reinterpret_cast<uintptr_t>(op.state2);
  return addresses % 16 == 0;
}

}  // namespace

size_t sum_chunks(size_t n, int blocksize) {
  return (blocks_of(n, blocksize) + kBlocksPerChunk - 1) / kBlocksPerChunk;
}

void optimizer_update(const OptimizerPointers& op, const StepSlot* slot, StepFlags* flags,
                      const Launch& l) {
  const size_t nb = blocks_of(op.n, op.blocksize);
  const bool aligned = operands_aligned(op);
  // The common case (blocks of up to 2048 elements, indices below 2^32):
  // eight elements per thread, 32-bit indices, 256-thread blocks; anything
  // else four elements per thread, 1024 threads and 64-bit indices.
  const bool common = op.blocksize <= 8 * kUpdateThreads &&
                      nb * size_t(op.blocksize) <= size_t(UINT32_MAX);
  dispatch_step(op, [&](auto type, auto rule, auto quantized, auto two_states) {
    using T = decltype(type);
    using R = decltype(rule);
    constexpr bool q = decltype(quantized)::value, two = decltype(two_states)::value;
    const auto launch = [&](auto kernel, int per_thread, int per_sm) {
      const int group = update_group(op.blocksize, per_thread);
      const int threads = std::max(kUpdateThreads, group);
      const unsigned grid = grid_for(nb, size_t(threads / group), l.max_blocks(per_sm));
      kernel<<<grid, threads, table_bytes(op), l.stream>>>(op, aligned, threads / group, slot,
                                                           flags);
    };
    if (common) {
      // 64 registers, four blocks per SM. (H200, 256M, same-run A/B:
      // AdamW8bit SkipBlocks 1.43 ms; three blocks at 80 registers 1.48 ms;
      // four elements per thread, five blocks at 48 registers, 1.73 ms; the
      // same with eight elements spills.)
      const auto kernel = update_kernel<T, R, q, two, uint32_t, 8, kUpdateThreads, 4>;
      // As many blocks as fit at once (one wave of the grid-stride loop);
      // the same for every launch of this kernel with these operands.
      static const int per_sm = [&] {
        int fit = 0;
        LOWBIT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &fit, kernel, kUpdateThreads, table_bytes(op)));
        return std::max(fit, 1);
      }();
      launch(kernel, 8, per_sm);
    } else {
      launch(update_kernel<T, R, q, two, size_t, 4, 1024, 1>, 4, 4);
    }
  });
  LOWBIT_CUDA_LAUNCHED("optimizer_update");
}

void optimizer_update_norms(const OptimizerPointers& op, StepSlot* slot, const StepFlags* flags,
                            double* partials, const Launch& l) {
  const size_t chunks = sum_chunks(op.n, op.blocksize);
  if (chunks > 0) {
    dispatch_step(op, [&](auto type, auto rule, auto quantized, auto two_states) {
      using T = decltype(type);
      using R = decltype(rule);
      constexpr bool q = decltype(quantized)::value, two = decltype(two_states)::value;
      norms_kernel<T, R, q, two><<<unsigned(chunks), kSumThreads, table_bytes(op), l.stream>>>(
          op, operands_aligned(op), slot, flags, partials);
    });
    LOWBIT_CUDA_LAUNCHED("optimizer_update_norms");
  }
  finish_sums_kernel<<<1, kFinishThreads, 0, l.stream>>>(partials, chunks, true, slot, flags);
  LOWBIT_CUDA_LAUNCHED("optimizer_update_norms (sum)");
}

void gradient_stats(const void* grad, DType grad_type, size_t n, int blocksize, StepSlot* slot,
                    double* partials, bool sum, const Launch& l) {
  const size_t chunks = sum_chunks(n, blocksize);
  uint32_t* check = nullptr;
  if (!sum && chunks > 0) {
    check = reinterpret_cast<uint32_t*>(partials + 2 * chunks);
    LOWBIT_CUDA_CHECK(cudaMemsetAsync(check, 0, 2 * sizeof(uint32_t), l.stream));
    const uint32_t limit = gradient_check_limit_bits(blocksize);
    dispatch_float(grad_type, [&](auto type) {
      using T = decltype(type);
      constexpr int V = 16 / int(sizeof(typename T::Storage));
      grad_check_kernel<T><<<grid_for(n, size_t(kCheckThreads) * V * 4, l.max_blocks(8)),
                             kCheckThreads, 0, l.stream>>>(
          static_cast<const typename T::Storage*>(grad), n, limit, check);
    });
    LOWBIT_CUDA_LAUNCHED("gradient_stats (check)");
  }
  if (chunks > 0) {
    dispatch_float(grad_type, [&](auto type) {
      using T = decltype(type);
      grad_sum_kernel<T><<<unsigned(chunks), kSumThreads, 0, l.stream>>>(
          static_cast<const typename T::Storage*>(grad), n, blocksize,
          reinterpret_cast<uintptr_t>(grad) % 16 == 0, partials, check);
    });
    LOWBIT_CUDA_LAUNCHED("gradient_stats");
  }
  finish_sums_kernel<<<1, kFinishThreads, 0, l.stream>>>(partials, chunks, false, slot, nullptr,
                                                         check);
  LOWBIT_CUDA_LAUNCHED("gradient_stats (sum)");
}

void step_clear_found(StepFlags* flags, const Launch& l) {
  clear_found_kernel<<<1, 1, 0, l.stream>>>(flags);
  LOWBIT_CUDA_LAUNCHED("optimizer_prepare (clear)");
}

void step_decide(const ItemBatch& batch, bool skip_nonfinite, const StepSlot* slots,
                 StepFlags* flags, const Launch& l) {
  decide_kernel<<<1, kItemsPerLaunch, 0, l.stream>>>(batch, skip_nonfinite ? 1 : 0, slots, flags);
  LOWBIT_CUDA_LAUNCHED("optimizer_prepare (decide)");
}

void step_apply(const ItemBatch& batch, bool first_batch, StepSlot* slots, StepFlags* flags,
                const Launch& l) {
  apply_kernel<<<1, kItemsPerLaunch, 0, l.stream>>>(batch, first_batch ? 1 : 0, slots, flags);
  LOWBIT_CUDA_LAUNCHED("optimizer_prepare (apply)");
}

void step_scale(const ItemBatch& batch, StepSlot* slots, const StepFlags* flags, const Launch& l) {
  scale_kernel<<<1, kItemsPerLaunch, 0, l.stream>>>(batch, slots, flags);
  LOWBIT_CUDA_LAUNCHED("optimizer_scale");
}

}  // namespace lowbit::kernels::cuda
