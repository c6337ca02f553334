// Fused optimizer steps on the CPU. One loop serves every optimizer: per block
// of the parameter, dequantize (or copy) the states, apply the rule of
// kernels/optimizer_rules.h, check the results are finite, write the parameter
// and requantize the states with the block's new absmax. Blocks are spread over
// the OpenMP threads and never split; the rule is the only part that differs.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/decoder8.h"
#include "kernels/cpu/element_io.h"
#include "kernels/cpu/encoder8.h"
#include "kernels/rule_dispatch.h"

LOWBIT_CPU_ISA_BEGIN
namespace {

constexpr size_t kMaxBlock = size_t(kMaxBlocksize);
// Norm partial sums: blocks are summed as float, then groups of this many
// blocks in double, then the groups in order: thread-count independent.
constexpr size_t kBlocksPerChunk = 256;

template <typename T>
T* host(const Buffer* b) {
  return b ? static_cast<T*>(CpuBackend::host(*b)) : nullptr;
}

// Magnitudes are compared as IEEE bit patterns (magnitude_bits, element_io.h):
// NaN and inf are the largest, at or above kNonFinite.
constexpr uint32_t kNonFinite = 0x7f800000u;

// Largest magnitudes of a block's new values (bit patterns, see above).
struct BlockMax {
  uint32_t p = 0, s1 = 0, s2 = 0;
  bool finite() const { return p < kNonFinite && s1 < kNonFinite && s2 < kNonFinite; }
};

// One state as the block loop sees it.
template <bool kQuantized>
struct State {
  void* data = nullptr;
  float* absmax = nullptr;
  const Encoder8* encoder = nullptr;
  const Decoder8* decoder = nullptr;
  uint8_t zero = 0;

  State(Buffer* values, Buffer* absmax_buf, const Buffer* qmap_buf)
      : data(host<void>(values)), absmax(host<float>(absmax_buf)) {
    if (kQuantized && data) {
      const float* qmap = host<const float>(qmap_buf);
      encoder = &Encoder8::for_code(qmap);
      decoder = &Decoder8::for_code(qmap);
      zero = uint8_t(zero_index(qmap, 256));
    }
  }

  void load(size_t b, size_t begin, size_t len, float* out) const {
    if constexpr (kQuantized) {
      decoder->decode_scaled(static_cast<const uint8_t*>(data) + begin, absmax[b], out, len);
    } else {
      std::memcpy(out, static_cast<const float*>(data) + begin, len * sizeof(float));
    }
  }

  // `m` is max |values|, computed by the caller. Codes encode values * (1/m),
  // as bitsandbytes' optimizer kernels do (one division per block).
  void store(size_t b, size_t begin, size_t len, const float* values, float m) const {
    if constexpr (kQuantized) {
      uint8_t* codes = static_cast<uint8_t*>(data) + begin;
      absmax[b] = m;
      if (m == 0.0f)
        std::memset(codes, zero, len);
      else
        encoder->encode_scaled(values, 1.0f / m, codes, len);
    } else {
      std::memcpy(static_cast<float*>(data) + begin, values, len * sizeof(float));
    }
  }
};

// The per-block pieces of a step for one (param dtype, rule, state layout).
template <typename T, typename Rule, bool kQuantized, bool kTwoStates>
class BlockStep {
 public:
  using Storage = typename T::Storage;

  BlockStep(const OptimizerOperands& op, const OptimizerArgs& args)
      : args_(args),
        param_(host<Storage>(op.param)),
        grad_(host<const Storage>(op.grad)),
        state1_(op.state1, op.absmax1, op.qmap1),
        state2_(op.state2, op.absmax2, op.qmap2) {}

  // s1, s2 of block b as floats; s2 reads 0 when there is no state2.
  void load(size_t b, size_t begin, size_t len, float* s1, float* s2) const {
    state1_.load(b, begin, len, s1);
    if constexpr (kTwoStates)
      state2_.load(b, begin, len, s2);
    else
      std::fill(s2, s2 + len, 0.0f);
  }

  // New states into s1, s2 and new parameter values into p; returns their
  // largest magnitudes (s2 only when it is a state). A float16 block is first
  // converted into `staged` (2 * len floats) in bulk: the vector conversion
  // instructions instead of the software rule element by element (10-17
  // vector operations per 16 values; same values either way).
  BlockMax apply(size_t begin, size_t len, float* p, float* s1, float* s2, float* staged) const {
    if constexpr (std::is_same_v<T, F16>) {
      f16_to_float_n(param_ + begin, staged, len);
      f16_to_float_n(grad_ + begin, staged + len, len);
      return apply_floats<F32>(staged, staged + len, len, p, s1, s2);
    } else {
      return apply_floats<T>(param_ + begin, grad_ + begin, len, p, s1, s2);
    }
  }

  template <typename U>
  BlockMax apply_floats(const typename U::Storage* param, const typename U::Storage* grad,
                        size_t len, float* p, float* s1, float* s2) const {
    const lb_optim_args a = args_;
    uint32_t mp = 0, m1 = 0, m2 = 0;
    for (size_t j = 0; j < len; ++j) {
      const float pj = U::load(param[j]);
      const float g = U::load(grad[j]) * a.gnorm_scale;
      const lb_optim_result r = Rule::apply(a, pj, g, s1[j], s2[j]);
      s1[j] = r.s1;
      s2[j] = r.s2;
      p[j] = lb_apply_update(a, pj, r.u);
      mp = std::max(mp, magnitude_bits(p[j]));
      m1 = std::max(m1, magnitude_bits(r.s1));
      if constexpr (kTwoStates) m2 = std::max(m2, magnitude_bits(r.s2));
    }
    return {mp, m1, m2};
  }

  // Block partial sums of u^2 and p^2, in sixteen lanes.
  void norms(size_t begin, size_t len, const float* s1, const float* s2, float& u_sq,
             float& p_sq) const {
    constexpr size_t kLanes = 16;
    const lb_optim_args a = args_;
    float ul[kLanes] = {}, pl[kLanes] = {};
    const auto one = [&](size_t j, size_t k) {
      const float pj = T::load(param_[begin + j]);
      const float g = T::load(grad_[begin + j]) * a.gnorm_scale;
      const float u = Rule::apply(a, pj, g, s1[j], s2[j]).u;
      ul[k] += u * u;
      pl[k] += pj * pj;
    };
    size_t j = 0;
    for (; j + kLanes <= len; j += kLanes)
      for (size_t k = 0; k < kLanes; ++k) one(j + k, k);
    for (size_t k = 0; j < len; ++j, ++k) one(j, k);
    u_sq = 0.0f;
    p_sq = 0.0f;
    for (size_t k = 0; k < kLanes; ++k) {
      u_sq += ul[k];
      p_sq += pl[k];
    }
  }

  void store(size_t b, size_t begin, size_t len, const float* p, const float* s1, const float* s2,
             float m1, float m2) const {
    if constexpr (std::is_same_v<T, F16>)
      float_to_f16_n(p, param_ + begin, len);
    else
      for (size_t j = 0; j < len; ++j) param_[begin + j] = T::store(p[j]);
    state1_.store(b, begin, len, s1, m1);
    if constexpr (kTwoStates) state2_.store(b, begin, len, s2, m2);
  }

 private:
  const OptimizerArgs args_;
  Storage* param_;
  const Storage* grad_;
  State<kQuantized> state1_, state2_;
};

template <typename Step>
size_t run_update(const Step& step, size_t n, size_t blocksize) {
  const ptrdiff_t nb = ptrdiff_t(num_blocks(n, int(blocksize)));
  size_t rejected = 0;
#pragma omp parallel reduction(+ : rejected)
  {
    alignas(64) float p[kMaxBlock];
    alignas(64) float s1[kMaxBlock];
    alignas(64) float s2[kMaxBlock];
    alignas(64) float staged[2 * kMaxBlock];
#pragma omp for schedule(static)
    for (ptrdiff_t b = 0; b < nb; ++b) {
      const size_t begin = size_t(b) * blocksize;
      const size_t len = std::min(n, begin + blocksize) - begin;
      step.load(size_t(b), begin, len, s1, s2);
      const BlockMax m = step.apply(begin, len, p, s1, s2, staged);
      if (!m.finite()) {
        ++rejected;
        continue;
      }
      step.store(size_t(b), begin, len, p, s1, s2, bits_float(m.s1), bits_float(m.s2));
    }
  }
  return rejected;
}

// Sums fn(b) -> (x, y) over the blocks in kBlocksPerChunk chunks.
template <typename BlockSums>
std::pair<double, double> sum_blocks(size_t nb, const BlockSums& block_sums) {
  const ptrdiff_t chunks = ptrdiff_t((nb + kBlocksPerChunk - 1) / kBlocksPerChunk);
  const size_t count = size_t(chunks);
  std::vector<std::pair<double, double>> partial(count);
#pragma omp parallel for schedule(static)
  for (ptrdiff_t c = 0; c < chunks; ++c) {
    const size_t first = size_t(c) * kBlocksPerChunk;
    const size_t last = std::min(nb, first + kBlocksPerChunk);
    double x = 0, y = 0;
    for (size_t b = first; b < last; ++b) {
      const std::pair<float, float> s = block_sums(b);
      x += s.first;
      y += s.second;
    }
    partial[size_t(c)] = {x, y};
  }
  std::pair<double, double> total{0, 0};
  for (const auto& p : partial) {
    total.first += p.first;
    total.second += p.second;
  }
  return total;
}

template <typename Step>
UpdateNorms run_norms(const Step& step, size_t n, size_t blocksize) {
  const size_t nb = num_blocks(n, int(blocksize));
  const auto sums = sum_blocks(nb, [&](size_t b) {
    alignas(64) float s1[kMaxBlock];
    alignas(64) float s2[kMaxBlock];
    const size_t begin = b * blocksize;
    const size_t len = std::min(n, begin + blocksize) - begin;
    step.load(b, begin, len, s1, s2);
    float u_sq = 0, p_sq = 0;
    step.norms(begin, len, s1, s2, u_sq, p_sq);
    return std::make_pair(u_sq, p_sq);
  });
  return {sums.first, sums.second};
}

// Calls fn(step) with the BlockStep of the operands.
template <typename Fn>
void with_step(const OptimizerOperands& op, const OptimizerArgs& args, Fn&& fn) {
  dispatch_float(op.param_type, [&](auto type) {
    using T = decltype(type);
    with_rule(op.rule, op.state2 != nullptr, [&](auto rule, auto two_states) {
      using R = decltype(rule);
      constexpr bool kTwo = decltype(two_states)::value;
      if (op.quantized)
        fn(BlockStep<T, R, true, kTwo>(op, args));
      else
        fn(BlockStep<T, R, false, kTwo>(op, args));
    });
  });
}

template <typename T>
std::pair<float, float> block_sum_sq(const typename T::Storage* g, size_t begin, size_t len) {
  if constexpr (std::is_same_v<T, F16>) {  // bulk conversion first, as in BlockStep::apply
    alignas(64) float staged[kMaxBlock];
    f16_to_float_n(g + begin, staged, len);
    return block_sum_sq<F32>(staged, 0, len);
  }
  constexpr size_t kLanes = 16;
  float lane[kLanes] = {};
  size_t j = 0;
  for (; j + kLanes <= len; j += kLanes)
    for (size_t k = 0; k < kLanes; ++k) {
      const float v = T::load(g[begin + j + k]);
      lane[k] += v * v;
    }
  for (size_t k = 0; j < len; ++j, ++k) {
    const float v = T::load(g[begin + j]);
    lane[k] += v * v;
  }
  float s = 0.0f;
  for (size_t k = 0; k < kLanes; ++k) s += lane[k];
  // Second sum: 1 for a block whose float sum is not finite.
  return {s, magnitude_bits(s) >= kNonFinite ? 1.0f : 0.0f};
}

// The largest |g[i]| as a bit pattern (magnitude_bits): the threads' maxima,
// then the largest of them.
template <typename T>
uint32_t max_magnitude_bits(const typename T::Storage* g, size_t n) {
  uint32_t largest = 0;
#pragma omp parallel for schedule(static) reduction(max : largest)
  for (ptrdiff_t i = 0; i < ptrdiff_t(n); ++i)
    largest = std::max(largest, magnitude_bits(T::load(g[i])));
  return largest;
}

}  // namespace

size_t optimizer_update(const OptimizerOperands& op, const OptimizerArgs& args) {
  size_t rejected = 0;
  with_step(op, args,
            [&](const auto& step) { rejected = run_update(step, op.n, size_t(op.blocksize)); });
  return rejected;
}

UpdateNorms optimizer_update_norms(const OptimizerOperands& op, const OptimizerArgs& args) {
  UpdateNorms norms;
  with_step(op, args,
            [&](const auto& step) { norms = run_norms(step, op.n, size_t(op.blocksize)); });
  return norms;
}

GradientStats gradient_stats(const void* grad, DType grad_type, size_t n, int blocksize,
                             bool sum) {
  GradientStats stats;
  dispatch_float(grad_type, [&](auto type) {
    using T = decltype(type);
    const auto* g = static_cast<const typename T::Storage*>(grad);
    if (!sum) {
      // Only the decision is wanted: the largest |g| decides alone unless it
      // is finite and at least gradient_check_limit_bits' 2^e; then the sums
      // do (the CUDA backend's check, kernels/cuda/optimizer.cu). An integer
      // max over the magnitudes' bits, in any order: at memory speed.
      const uint32_t limit = gradient_check_limit_bits(blocksize);
      const uint32_t largest = max_magnitude_bits<T>(g, n);
      if (largest < limit || largest >= kNonFinite) {
        stats.finite = largest < kNonFinite;
        return;
      }
    }
    const size_t bs = size_t(blocksize);
    const auto sums = sum_blocks(num_blocks(n, blocksize), [&](size_t b) {
      const size_t begin = b * bs;
      return block_sum_sq<T>(g, begin, std::min(n, begin + bs) - begin);
    });
    stats.sum_sq = sums.first;
    stats.finite = sums.second == 0.0;
  });
  return stats;
}

LOWBIT_CPU_ISA_END
