// Optimizer steps on CUDA: the twin of kernels/cpu/optimizer_update.cpp with
// the rules of kernels/optimizer_rules.h and the decisions of step_rules.h, so
// a step gives the CPU's bits. The fused update gives each thread
// kPerThread consecutive elements (blocksize / kPerThread threads per
// quantization block; few registers, so that enough warps hide the memory
// latency); the sums (norms, gradient statistics) follow the CPU's summation
// order exactly: sixteen lanes per block, blocks in chunks of 256 in double,
// chunks in order.
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

constexpr int kPerThread = 4;    // elements of the fused update per thread
constexpr int kUpdateThreads = 256;

// One state of a step as the kernels see it.
template <bool kQuantized>
struct StateView {
  void* data;
  float* absmax;
  const CodeTable* table;  // shared memory copy (8-bit only)

  // Elements [i, i + N) of block b as floats.
  template <int N, typename I>
  __device__ __forceinline__ void load_n(I b, I i, I n, float (&v)[N]) const {
    if constexpr (kQuantized) {
      uint8_t c[N];
      load_bytes<N>(static_cast<const uint8_t*>(data), i, n, c);
      const float m = absmax[b];
#pragma unroll
      for (int k = 0; k < N; ++k) v[k] = table->code[c[k]] * m;
    } else {
      cuda::load_n<F32, N>(static_cast<const float*>(data), i, n, v);
    }
  }
  // `m` is the group's max |value|; codes encode value * (1 / m).
  template <int N, typename I>
  __device__ __forceinline__ void store_n(I b, I i, I n, const float (&v)[N],
                                          float m, bool leader) const {
    if constexpr (kQuantized) {
      uint8_t c[N];
      if (m == 0.0f) {
#pragma unroll
        for (int k = 0; k < N; ++k) c[k] = uint8_t(table->zero);
      } else {
        const float inv = 1.0f / m;
#pragma unroll
        for (int k = 0; k < N; ++k) c[k] = encode(*table, v[k] * inv);
      }
      store_bytes<N>(static_cast<uint8_t*>(data), i, n, c);
      if (leader) absmax[b] = m;
    } else {
      cuda::store_n<F32, N>(static_cast<float*>(data), i, n, v);
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
  // without a second state.
  template <int N, typename I>
  __device__ __forceinline__ void load(I b, I i, I end, float (&p)[N],
                                       float (&g)[N], float (&v1)[N], float (&v2)[N]) const {
    load_n<T, N>(param, i, end, p);
    load_n<T, N>(grad, i, end, g);
    s1.load_n(b, i, end, v1);
    if constexpr (kTwoStates) s2.load_n(b, i, end, v2);
  }
};

// Threads per quantization block; a CUDA block has max(kUpdateThreads, that).
int update_group(int blocksize) { return blocksize / kPerThread; }

// Index: uint32_t when every element index fits (fewer registers), else size_t.
template <typename T, typename Rule, bool kQuantized, bool kTwoStates, typename Index,
          int kMaxThreads, int kMinBlocks>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocks)
    update_kernel(OptimizerPointers op, const StepSlot* slot, StepFlags* flags) {
  constexpr int N = kPerThread;
  if (flags->found_inf) return;
  __shared__ uint32_t scratch[2][3][32];
  const StepOperands<T, kQuantized, kTwoStates> ops(op, load_tables<kQuantized, kTwoStates>(op));
  const lb_optim_args a = slot->args;
  const Index n = Index(op.n);
  const int g = op.blocksize / N;
  const Index groups = Index(blockDim.x) / Index(g);
  const Index nb = Index(blocks_of(op.n, op.blocksize));
  const Index group = Index(threadIdx.x) / Index(g), lane = Index(threadIdx.x) % Index(g);
  int parity = 0;
  for (Index first = Index(blockIdx.x) * groups; first < nb;
       first += Index(gridDim.x) * groups, ++parity) {
    const Index b = first + group;
    const bool active = b < nb;
    const Index i = b * Index(op.blocksize) + lane * Index(N);
    float p[N] = {}, gr[N] = {}, s1[N] = {}, s2[N] = {};
    uint32_t mp = 0, m1 = 0, m2 = 0;
    if (active) {
      ops.load(b, i, n, p, gr, s1, s2);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        if (i + Index(k) >= n) break;
        const lb_optim_result r = Rule::apply(a, p[k], gr[k] * a.gnorm_scale, s1[k], s2[k]);
        p[k] = lb_apply_update(a, p[k], r.u);
        s1[k] = r.s1;
        s2[k] = r.s2;
        mp = max(mp, magnitude_bits(p[k]));
        m1 = max(m1, magnitude_bits(r.s1));
        if constexpr (kTwoStates) m2 = max(m2, magnitude_bits(r.s2));
      }
    }
    group_max3(mp, m1, m2, g, scratch, parity);
    if (!active) continue;
    if (mp >= kNonFinite || m1 >= kNonFinite || m2 >= kNonFinite) {
      if (lane == 0) atomicAdd(reinterpret_cast<unsigned long long*>(&flags->skipped_blocks), 1ull);
      continue;
    }
    store_n<T, N>(ops.param, i, n, p);
    ops.s1.store_n(b, i, n, s1, __uint_as_float(m1), lane == 0);
    if constexpr (kTwoStates) ops.s2.store_n(b, i, n, s2, __uint_as_float(m2), lane == 0);
  }
}

// Chunk blockIdx.x of the blocks (kBlocksPerChunk of them), summed in the
// CPU's order: per block, sixteen float lanes (lane k takes elements k,
// k + 16, ... in turn), the lanes added in order from 0; then thread 0 adds
// the chunk's blocks in double in order. Four threads share a block, each
// holding four neighbouring lanes, so that a warp reads whole 64-byte runs of
// eight blocks at once. `quad(b, e, count, x, y)` adds the terms of elements
// [e, e + count) (count <= 4) of block b to x[0..count) and y[0..count). With
// kCountNonFinite, y instead counts the blocks whose float sum x is not finite
// (the CPU's gradient check).
constexpr int kQuad = 4;                            // lanes per thread
constexpr int kThreadsPerBlock = kLanes / kQuad;    // threads per block
constexpr int kBlocksAtOnce = kSumThreads / kThreadsPerBlock;
constexpr int kUnroll = 4;  // quads per thread in flight

template <bool kCountNonFinite, typename Quad>
__device__ __forceinline__ void chunk_sums(size_t n, int blocksize, const Quad& quad,
                                           double* partials) {
  __shared__ float xs[kBlocksPerChunk], ys[kBlocksPerChunk];
  const size_t nb = blocks_of(n, blocksize);
  const size_t chunk_first = size_t(blockIdx.x) * kBlocksPerChunk;
  const int t = int(threadIdx.x) % kThreadsPerBlock, slot = int(threadIdx.x) / kThreadsPerBlock;
  for (int round = 0; round < kBlocksPerChunk; round += kBlocksAtOnce) {
    const size_t b = chunk_first + size_t(round + slot);
    float xl[kQuad] = {}, yl[kQuad] = {};
    if (b < nb) {
      const size_t begin = b * size_t(blocksize);
      const size_t len = min(n, begin + size_t(blocksize)) - begin;
      // Unrolled so that a thread has kUnroll loads in flight, not one.
      for (size_t j0 = size_t(t * kQuad); j0 < len; j0 += kLanes * kUnroll) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const size_t j = j0 + size_t(u * kLanes);
          if (j >= len) break;
          const size_t left = len - j;
          quad(b, begin + j, left < size_t(kQuad) ? int(left) : kQuad, xl, yl);
        }
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

template <typename T, typename Rule, bool kQuantized, bool kTwoStates>
__global__ void __launch_bounds__(kSumThreads)
    norms_kernel(OptimizerPointers op, const StepSlot* slot, const StepFlags* flags,
                 double* partials) {
  if (flags->found_inf) return;
  const StepOperands<T, kQuantized, kTwoStates> ops(op, load_tables<kQuantized, kTwoStates>(op));
  const lb_optim_args a = slot->args;
  chunk_sums<false>(
      op.n, op.blocksize,
      [&](size_t b, size_t e, int count, float (&u_sq)[kQuad], float (&p_sq)[kQuad]) {
        float p[kQuad], g[kQuad], s1[kQuad], s2[kQuad] = {};
        ops.load(b, e, e + size_t(count), p, g, s1, s2);
#pragma unroll
        for (int k = 0; k < kQuad; ++k) {
          if (k >= count) break;
          const float u = Rule::apply(a, p[k], g[k] * a.gnorm_scale, s1[k], s2[k]).u;
          u_sq[k] += u * u;
          p_sq[k] += p[k] * p[k];
        }
      },
      partials);
}

template <typename T>
__global__ void __launch_bounds__(kSumThreads)
    grad_sum_kernel(const typename T::Storage* grad, size_t n, int blocksize, double* partials) {
  chunk_sums<true>(
      n, blocksize,
      [&](size_t, size_t e, int count, float (&sq)[kQuad], float(&)[kQuad]) {
        float g[kQuad];
        load_n<T, kQuad>(grad, e, e + size_t(count), g);
#pragma unroll
        for (int k = 0; k < kQuad; ++k)
          if (k < count) sq[k] += g[k] * g[k];
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
                       const StepFlags* flags) {
  if (flags && flags->found_inf) return;
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

}  // namespace

size_t sum_chunks(size_t n, int blocksize) {
  return (blocks_of(n, blocksize) + kBlocksPerChunk - 1) / kBlocksPerChunk;
}

void optimizer_update(const OptimizerPointers& op, const StepSlot* slot, StepFlags* flags,
                      const Launch& l) {
  const int group = update_group(op.blocksize);
  const int threads = std::max(kUpdateThreads, group);
  const size_t nb = blocks_of(op.n, op.blocksize);
  // The common case (blocks of up to 1024 elements, indices below 2^32) runs
  // with 32-bit indices at 48 registers, five 256-thread blocks per
  // multiprocessor; anything else at 1024 threads and 64-bit indices. (On the
  // H200 at 256M: AdamW8bit's update 1.97 ms against 2.30 ms with 64
  // registers, four blocks and spills; three blocks at 80 registers: 2.65 ms.)
  const bool common = threads == kUpdateThreads && nb * size_t(op.blocksize) <= size_t(UINT32_MAX);
  dispatch_step(op, [&](auto type, auto rule, auto quantized, auto two_states) {
    using T = decltype(type);
    using R = decltype(rule);
    constexpr bool q = decltype(quantized)::value, two = decltype(two_states)::value;
    const auto launch = [&](auto kernel, int per_sm) {
      const unsigned grid = grid_for(nb, size_t(threads / group), l.max_blocks(per_sm));
      kernel<<<grid, threads, table_bytes(op), l.stream>>>(op, slot, flags);
    };
    if (common) {
      const auto kernel = update_kernel<T, R, q, two, uint32_t, kUpdateThreads, 5>;
      // As many blocks as fit at once (one wave of the grid-stride loop);
      // the same for every launch of this kernel with these operands.
      static const int per_sm = [&] {
        int fit = 0;
        LOWBIT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, kernel, threads,
                                                                        table_bytes(op)));
        return std::max(fit, 1);
      }();
      launch(kernel, per_sm);
    } else {
      launch(update_kernel<T, R, q, two, size_t, 1024, 1>, 4);
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
      norms_kernel<T, R, decltype(quantized)::value, decltype(two_states)::value>
          <<<unsigned(chunks), kSumThreads, table_bytes(op), l.stream>>>(op, slot, flags,
                                                                        partials);
    });
    LOWBIT_CUDA_LAUNCHED("optimizer_update_norms");
  }
  finish_sums_kernel<<<1, kFinishThreads, 0, l.stream>>>(partials, chunks, true, slot, flags);
  LOWBIT_CUDA_LAUNCHED("optimizer_update_norms (sum)");
}

void gradient_stats(const void* grad, DType grad_type, size_t n, int blocksize, StepSlot* slot,
                    double* partials, const Launch& l) {
  const size_t chunks = sum_chunks(n, blocksize);
  if (chunks > 0) {
    dispatch_float(grad_type, [&](auto type) {
      using T = decltype(type);
      grad_sum_kernel<T><<<unsigned(chunks), kSumThreads, 0, l.stream>>>(
          static_cast<const typename T::Storage*>(grad), n, blocksize, partials);
    });
    LOWBIT_CUDA_LAUNCHED("gradient_stats");
  }
  finish_sums_kernel<<<1, kFinishThreads, 0, l.stream>>>(partials, chunks, false, slot, nullptr);
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
