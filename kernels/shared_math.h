/* Scalar rules shared verbatim by the CPU kernels (compiled as C++), the CUDA
 * kernels (the same C++, as __host__ __device__ functions) and the OpenCL
 * programs (this file is prepended to every .cl source at build time), so all
 * backends hash and round identically. Written in the common subset of C++17
 * and OpenCL C 1.2: no pointers, no address spaces, 32-bit integers. */
#ifndef LOWBIT_KERNELS_SHARED_MATH_H
#define LOWBIT_KERNELS_SHARED_MATH_H

#ifdef __OPENCL_VERSION__
typedef uint lb_u32;
#define LB_FN inline
#define lb_as_uint(f) as_uint(f)
#else
#include <cstdint>
#include <cstring>
namespace lowbit::kernels {
typedef uint32_t lb_u32;
#ifdef __CUDACC__
#define LB_FN static inline __host__ __device__
#else
#define LB_FN static inline
#endif
LB_FN lb_u32 lb_as_uint(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  lb_u32 u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
#endif

/* "lowbias32" integer hash (constants from Chris Wellons' hash-prospector,
 * bias 0.17): cheap, stateless and good enough to drive stochastic rounding. */
LB_FN lb_u32 lb_hash(lb_u32 x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

/* Uniform float in [0, 1) with 24 random bits for element (idx_hi:idx_lo) of
 * the stream named by a 64-bit seed (seed_hi:seed_lo). */
LB_FN float lb_uniform(lb_u32 seed_lo, lb_u32 seed_hi, lb_u32 idx_lo, lb_u32 idx_hi) {
  lb_u32 h = lb_hash(idx_hi ^ lb_hash(seed_hi + 0x9e3779b9U));
  h = lb_hash(idx_lo ^ lb_hash(seed_lo ^ h));
  return (float)(h >> 8) * 5.9604644775390625e-8f; /* 2^-24 */
}

/* Stochastic choice between the two codes around r (lo <= r <= hi, lo < hi):
 * up with probability (r - lo) / (hi - lo). Written without a division so that
 * both backends evaluate it with correctly rounded operations only. */
LB_FN int lb_round_up(float r, float lo, float hi, float u) { return u * (hi - lo) < (r - lo); }

/* float -> bfloat16 bit pattern, round to nearest even; NaN stays quiet NaN. */
LB_FN lb_u32 lb_bf16_bits(float f) {
  lb_u32 u = lb_as_uint(f);
  if ((u & 0x7fffffffU) > 0x7f800000U) return (u >> 16) | 0x40U;
  u += 0x7fffU + ((u >> 16) & 1U);
  return u >> 16;
}

/* The absmax rule of the quantizers (8-bit blockwise, NF4, FP4), the same on
 * every backend: a block's absmax is its largest |x|, NaN when it holds a NaN
 * and +inf when it holds an inf (and no NaN). Every backend finds it as the
 * largest magnitude bit pattern (as_uint(x) & 0x7fffffff): for non-negative
 * floats the integer order is the float order, and a NaN's lies above inf's,
 * so the order of the reduction does not matter and the backends pick the
 * same NaN when a block holds several. */

/* Whether a block's codes encode x / absmax. An all-zero block (absmax 0) and
 * a non-finite one (absmax inf or NaN) store the format's zero code
 * throughout instead: the first dequantizes to 0, the second to
 * 0 * absmax = NaN in every element, on every backend. */
LB_FN int lb_absmax_scales(float m) { return m > 0.0f && m <= 3.40282347e38f; }

#ifndef __OPENCL_VERSION__
}  // namespace lowbit::kernels
#endif

#endif /* LOWBIT_KERNELS_SHARED_MATH_H */
