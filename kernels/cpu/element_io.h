// Typed element access and the block absmax shared by the CPU kernels.
// Internal to kernels/cpu.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/isa_region.h"
#include "kernels/dtype.h"
#include "kernels/shared_math.h"

LOWBIT_CPU_ISA_BEGIN

struct F32 {
  using Storage = float;
  static float load(float v) { return v; }
  static float store(float v) { return v; }
};
struct BF16 {
  using Storage = uint16_t;
  static float load(uint16_t v) { return bf16_to_float(v); }
  static uint16_t store(float v) { return float_to_bf16(v); }
};
struct F16 {
  using Storage = uint16_t;
  static float load(uint16_t v) { return f16_to_float(v); }
  static uint16_t store(float v) { return float_to_f16(v); }
};

// Calls fn(Tag{}) with the tag type of `t` (float types only; checked earlier).
template <typename Fn>
void dispatch_float(DType t, Fn&& fn) {
  switch (t) {
    case DType::F32: fn(F32{}); return;
    case DType::BF16: fn(BF16{}); return;
    case DType::F16: fn(F16{}); return;
    case DType::U8: break;
  }
}

// Calls fn(block, begin, end) for every block of [0, n), blocks spread over
// the OpenMP threads (a block never splits across threads).
template <typename Fn>
void for_each_block(size_t n, int blocksize, Fn&& fn) {
  const ptrdiff_t nb = ptrdiff_t(num_blocks(n, blocksize));
#pragma omp parallel for schedule(static)
  for (ptrdiff_t b = 0; b < nb; ++b) {
    const size_t begin = size_t(b) * size_t(blocksize);
    fn(size_t(b), begin, std::min(n, begin + size_t(blocksize)));
  }
}

// |x| as its IEEE bit pattern: the patterns of magnitudes order like their
// values, NaN and inf above every finite one, and integer maxima vectorise.
inline uint32_t magnitude_bits(float x) { return float_bits(x) & 0x7fffffffu; }

// max |x| over [begin, end), NaN if a NaN is there: the absmax rule of
// kernels/shared_math.h, as the largest magnitude bit pattern. An integer max
// vectorises (a float select with a NaN test compiled to a branch per
// element, 5-6x slower).
template <typename T>
float block_absmax(const typename T::Storage* x, size_t begin, size_t end) {
  uint32_t m = 0;
  for (size_t i = begin; i < end; ++i) m = std::max(m, magnitude_bits(T::load(x[i])));
  return bits_float(m);
}

inline float element_uniform(const StochasticRounding& r, size_t i) {
  return lb_uniform(lb_u32(r.seed), lb_u32(r.seed >> 32), lb_u32(i), lb_u32(uint64_t(i) >> 32));
}

LOWBIT_CPU_ISA_END
