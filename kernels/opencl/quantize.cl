// Blockwise 8-bit and 4-bit (NF4/FP4) quantization: the OpenCL twin of
// kernels/cpu/blockwise_8bit.cpp and quantize_4bit.cpp. Same rules, same bits.
#pragma OPENCL FP_CONTRACT OFF

// Dequantizing: LB_DEQUANT_PER_ITEM elements per work-item, set by the host.
// GPUs take 4, read and written with one vector access each (a warp's lanes
// touch consecutive bytes; a block holds a multiple of 4 elements, so they
// share one scale), the tensor's last partial item element by element; CPU
// devices take 1, in kernels their compiler vectorises across items.
#ifdef LB_DEQUANT_PER_ITEM

// out = code[c] * absmax, then + offset (two roundings, as on the CPU).
__kernel void dequantize_blockwise(__global const uchar* codes, __global const float* absmax,
                                   __global const float* code, ulong n, uint block_shift,
                                   __global void* out, int out_type, float offset) {
  const size_t i = get_global_id(0) * LB_DEQUANT_PER_ITEM;
  if (i >= n) return;
  const float m = absmax[i >> block_shift];
#if LB_DEQUANT_PER_ITEM == 4
  if (i + 4 <= n) {
    const uchar4 c = ((__global const uchar4*)codes)[i / 4];
    const float4 product = (float4)(code[c.x], code[c.y], code[c.z], code[c.w]) * m;
    store4_elem(out, out_type, i, product + offset);
    return;
  }
#endif
  for (size_t e = i; e < min((size_t)n, i + LB_DEQUANT_PER_ITEM); ++e) {
    const float product = code[codes[e]] * m;
    store_elem(out, out_type, e, product + offset);
  }
}

// table: 15 midpoints, then the 16 code values. Element 2j is the high
// nibble of byte j.
__kernel void dequantize_4bit(__global const uchar* packed, __global const float* absmax,
                              ulong n, uint block_shift, __global const float* table,
                              __global void* out, int out_type) {
  const size_t i = get_global_id(0) * LB_DEQUANT_PER_ITEM;
  if (i >= n) return;
  const float m = absmax[i >> block_shift];
#if LB_DEQUANT_PER_ITEM == 4
  if (i + 4 <= n) {
    const uchar2 p = ((__global const uchar2*)packed)[i / 4];
    const float4 value = (float4)(table[15 + (p.x >> 4)], table[15 + (p.x & 15)],
                                  table[15 + (p.y >> 4)], table[15 + (p.y & 15)]);
    store4_elem(out, out_type, i, value * m);
    return;
  }
#endif
  for (size_t e = i; e < min((size_t)n, i + LB_DEQUANT_PER_ITEM); ++e) {
    const uint p = packed[e / 2];
    store_elem(out, out_type, e, table[15 + ((e & 1) ? (p & 15) : (p >> 4))] * m);
  }
}
#endif

#ifdef LB_LANES
// Quantizing, built per block geometry: LB_LANES work-items per block, each
// taking LB_PER_ITEM elements of it (the optimizer update's layout), which
// meet once, in local memory, for the block's absmax. CPU devices take a
// block per item, in order. GPUs take strips of 4 consecutive elements
// LB_LANES * 4 apart, so that a warp's vector accesses touch consecutive
// bytes; the absmax and the codes do not depend on which item holds what.

// Index of the item's k-th element.
inline lb_idx item_elem(lb_idx block_begin, lb_idx lane, int k) {
#if LB_LANES > 1
  return block_begin + (lb_idx)(k / 4) * (LB_LANES * 4) + lane * 4 + (lb_idx)(k % 4);
#else
  return block_begin + (lb_idx)k;
#endif
}

// The item's elements of x, zeros past the tensor's end.
inline void load_item_values(__global const void* x, int type, lb_idx n, lb_idx block_begin,
                             lb_idx lane, bool whole, float* v) {
#if LB_LANES > 1
  if (whole) {
    for (int k = 0; k < LB_PER_ITEM; k += 4)
      vstore4(load4_elem(x, type, item_elem(block_begin, lane, k)), k / 4, v);
    return;
  }
#endif
  for (int k = 0; k < LB_PER_ITEM; ++k) {
    const lb_idx i = item_elem(block_begin, lane, k);
    v[k] = i < n ? load_elem(x, type, i) : 0.0f;
  }
}

// The block's absmax from its items' values: the largest magnitude as a bit
// pattern (for non-negative floats the integer order is the float order, and
// NaN lies above inf above every finite value: the absmax rule of
// shared_math.h), the same in every item. Local: one uint per item; every item must call it.
inline float block_absmax(const float* v, lb_idx lane, __local uint* maxima) {
  uint bits = 0;
  for (int k = 0; k < LB_PER_ITEM; ++k) bits = max(bits, as_uint(v[k]) & 0x7fffffffu);
#if LB_WARP_MAX
  return as_float(lb_warp_max(bits));
#elif LB_LANES > 1
  const uint lid = (uint)get_local_id(0);
  maxima[lid] = bits;
  barrier(CLK_LOCAL_MEM_FENCE);
  __local uint* lanes = maxima + (lid - lane);
#if LB_LANES > 32
  // The block's first lane reduces for all.
  if (lane == 0) {
    for (int l = 1; l < LB_LANES; ++l) bits = max(bits, lanes[l]);
    lanes[0] = bits;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  bits = lanes[0];
#else
  for (int l = 0; l < LB_LANES; ++l) bits = max(bits, lanes[l]);
#endif
#endif
  return as_float(bits);
}

#if LB_WARP_MAX
// x / m without a division, where blocks reduce by warp shuffles (NVIDIA): with inv = 1 / m,
// q = x * inv corrected by its residual, q - (q m - x) inv, in two fused multiply-adds, is the
// correctly rounded quotient, the CPU's, wherever that residual is exact (Markstein's theorem;
// the method for a divisor known in advance of Brisebarre, Muller and Raina, IEEE Trans.
// Computers 53(8), 2004). It is exact for m in [2^-60, 2^60] and |x| >= m 2^-40 (a check
// against the division on the CPU agreed on 3.2e10 pairs: every mantissa of x at 42 exponents
// from m's down, 12 mantissas of m at exponents -60, -17, 0 and 60; and on 2.9e9 random
// ones) and for zeros of either sign; a block takes it when all its nonzero values are that
// large (lb_quotient_fast), so no value branches. Other blocks divide.

// The block's smallest nonzero magnitude as bits (0 when it has none); every lane must call it.
inline uint block_smallest(const float* v) {
  uint low = 0xffffffffu;
  for (int k = 0; k < LB_PER_ITEM; ++k) low = min(low, (as_uint(v[k]) & 0x7fffffffu) - 1u);
  return ~lb_warp_max(~low) + 1u;  // a zero wrapped to the top above: not the smallest
}

inline bool lb_quotient_fast(float m, uint smallest) {
  return m >= 0x1p-60f && m <= 0x1p60f && smallest >= as_uint(m * 0x1p-40f);
}

inline float lb_quotient(float x, float m, float inv) {
  const float q = x * inv;
  return fma(-fma(q, m, -x), inv, q);
}
#endif

// The first entry whose value is >= r, chosen between it and the one below
// with probability proportional to the distance (bitsandbytes' rule).
inline int stochastic_code(LB_TABLE_SPACE const uint* table, float r, float u) {
  LB_TABLE_SPACE const float* code = (LB_TABLE_SPACE const float*)table;
  if (r <= code[0]) return 0;
  if (r >= code[255]) return 255;
  int lo = 0;
  for (int step = 128; step > 0; step >>= 1) lo += (r >= code[lo + step]) ? step : 0;
  return lo + lb_round_up(r, code[lo], code[lo + 1], u);
}

// Codes of x / absmax in `table` (kernels/opencl/code_table.h): the nearest
// entry, or a stochastic neighbour. Each group walks blocks (LB_FOR_EACH_BLOCK)
// and, with LB_LOCAL_TABLES, reads the table from its copy in `local_table`.
// Local: `maxima` two uints per item (turns alternate halves).
__kernel void quantize_blockwise(__global const void* x, int x_type, ulong n64, uint blocksize,
                                 __global const uint* restrict table, __global float* absmax,
                                 __global uchar* codes, int stochastic, uint seed_lo,
                                 uint seed_hi, __local uint* maxima, __local uint* local_table) {
#if LB_LOCAL_TABLES
  copy_to_local(table, local_table, LB_TABLE_WORDS);
  barrier(CLK_LOCAL_MEM_FENCE);
  __local const uint* t = local_table;
#else
  __global const uint* t = table;
#endif
  const bool bucketed = t[LB_TABLE_STEPS] == 1;
  const lb_idx n = (lb_idx)n64;
  LB_FOR_EACH_BLOCK {
    LB_TURN_GEOMETRY;
    float v[LB_PER_ITEM];
    load_item_values(x, x_type, n, block_begin, lane, whole, v);
    const float m = block_absmax(v, lane, maxima + (turn % 2) * get_local_size(0));
#if LB_WARP_MAX
    const uint smallest = block_smallest(v);
#endif
    if (!active) continue;
    uchar q[LB_PER_ITEM];
    if (!lb_absmax_scales(m)) {
      for (int k = 0; k < LB_PER_ITEM; ++k) q[k] = (uchar)t[LB_TABLE_ZERO];
    } else if (stochastic) {
      for (int k = 0; k < LB_PER_ITEM; ++k) {
        const ulong i = item_elem(block_begin, lane, k);
        const float u = lb_uniform(seed_lo, seed_hi, (uint)i, (uint)(i >> 32));
        q[k] = (uchar)stochastic_code(t, v[k] / m, u);
      }
    } else if (bucketed) {
#if LB_WARP_MAX
      if (lb_quotient_fast(m, smallest)) {
        const float inv = 1.0f / m;
        for (int k = 0; k < LB_PER_ITEM; ++k)
          q[k] = (uchar)encode_code(t, lb_quotient(v[k], m, inv), true);
      } else
#endif
      for (int k = 0; k < LB_PER_ITEM; ++k) q[k] = (uchar)encode_code(t, v[k] / m, true);
    } else {
      for (int k = 0; k < LB_PER_ITEM; ++k) q[k] = (uchar)encode_code(t, v[k] / m, false);
    }
#if LB_LANES > 1
    if (whole) {
      for (int k = 0; k < LB_PER_ITEM; k += 4)
        ((__global uchar4*)codes)[item_elem(block_begin, lane, k) / 4] = vload4(k / 4, q);
    } else
#endif
    {
      for (int k = 0; k < LB_PER_ITEM; ++k) {
        const lb_idx i = item_elem(block_begin, lane, k);
        if (i < n) codes[i] = q[k];
      }
    }
    if (lane == 0) absmax[b] = m;
  }
}

// The 4-bit quantizer's table (kernels/opencl/code_table.h, build_table4): 15 midpoints and
// +inf, then per sign and bucket of |r| the number of midpoints below the bucket, then the
// codes by position (LB_T4_CODES: for r >= 0, then for r < 0).
#define LB_T4_MANTISSA_BITS 3
#define LB_T4_FIRST_EXPONENT 103
#define LB_T4_BUCKETS (1 + 25 * (1 << LB_T4_MANTISSA_BITS))

// Where quantize_4bit reads its table: local memory (LB_LOCAL_TABLE4, GPUs: the lookups are
// gathers) or global.
#if LB_LOCAL_TABLE4
#define LB_T4_SPACE __local
#define lb_t4_byte lb_local_byte
#else
#define LB_T4_SPACE __global
#define lb_t4_byte lb_word_byte
#endif
#define LB_T4_CODES (16 + (2 * LB_T4_BUCKETS + 3) / 4)
#define LB_T4_WORDS (LB_T4_CODES + 8)

// The code of r: its position, the midpoints strictly below it (of its nearest value, ties low),
// is the bucket's start and one comparison, since no bucket holds two midpoints; NaN (never
// passed: a block holding one does not scale) would take 0, as the CPU's count gives it. A
// negative r that rounds to the zero entry takes the format's negative zero (the map for r < 0).
inline uint nibble_code(LB_T4_SPACE const uint* table, float r) {
  const uint u = as_uint(r);
  const int a = (int)((u & 0x7fffffffu) >> (23 - LB_T4_MANTISSA_BITS)) -
                (LB_T4_FIRST_EXPONENT << LB_T4_MANTISSA_BITS) + 1;
  const uint bucket = (u >> 31) * LB_T4_BUCKETS + (uint)clamp(a, 0, LB_T4_BUCKETS - 1);
  const uint start = lb_t4_byte(table + 16, bucket);
  const uint pos = start + (r > as_float(table[start]) ? 1u : 0u);
  return lb_t4_byte(table + LB_T4_CODES, (r != r ? 0u : pos) + (r < 0.0f ? 16u : 0u));
}

// 4-bit codes: `table` as above. Local: `maxima` one uint per item, `local_table` LB_T4_WORDS
// uints (LB_LOCAL_TABLE4; else unused).
__kernel void quantize_4bit(__global const void* x, int x_type, ulong n64, uint blocksize,
                            __global const uint* table, __global float* absmax,
                            __global uchar* packed, __local uint* maxima,
                            __local uint* local_table) {
#if LB_LOCAL_TABLE4
  copy_to_local(table, local_table, LB_T4_WORDS);
  barrier(CLK_LOCAL_MEM_FENCE);
  __local const uint* t = local_table;
#else
  __global const uint* t = table;
#endif
  const lb_idx n = (lb_idx)n64;
  LB_ITEM_GEOMETRY;
  float v[LB_PER_ITEM];
  load_item_values(x, x_type, n, block_begin, lane, whole, v);
  const float m = block_absmax(v, lane, maxima);
#if LB_WARP_MAX
  const uint smallest = block_smallest(v);
#endif
  if (!active) return;
  const bool scales = lb_absmax_scales(m);
  uchar nib[LB_PER_ITEM];
  // Elements past the tensor's end (zeros) encode 0: the pad nibble.
#if LB_WARP_MAX
  if (lb_quotient_fast(m, smallest)) {
    const float inv = 1.0f / m;
    for (int k = 0; k < LB_PER_ITEM; ++k) nib[k] = (uchar)nibble_code(t, lb_quotient(v[k], m, inv));
  } else
#endif
  for (int k = 0; k < LB_PER_ITEM; ++k) nib[k] = (uchar)nibble_code(t, scales ? v[k] / m : 0.0f);
  // Elements 2j and 2j + 1 (consecutive in every layout) share byte j.
  uchar bytes[LB_PER_ITEM / 2];
  for (int k = 0; k < LB_PER_ITEM / 2; ++k) bytes[k] = (uchar)(nib[2 * k] << 4 | nib[2 * k + 1]);
#if LB_LANES > 1
  if (whole) {
    for (int k = 0; k < LB_PER_ITEM; k += 4)
      ((__global uchar2*)packed)[item_elem(block_begin, lane, k) / 4] = vload2(k / 4, bytes);
  } else
#endif
  {
    for (int k = 0; k < LB_PER_ITEM; k += 2) {
      const lb_idx i = item_elem(block_begin, lane, k);
      if (i < n) packed[i / 2] = bytes[k / 2];
    }
  }
  if (lane == 0) absmax[b] = m;
}
#endif
