// Blockwise 8-bit and 4-bit (NF4/FP4) quantization: the OpenCL twin of
// kernels/cpu/blockwise_8bit.cpp and quantize_4bit.cpp. Same rules, same bits.
#pragma OPENCL FP_CONTRACT OFF

// Dequantizing: LB_DEQUANT_PER_ITEM elements per work-item, set by the host.
// GPUs take 16, read and written with vector accesses (a block holds a
// multiple of 16 elements, so they share one scale), the tensor's last
// partial item element by element; CPU devices take 1, in kernels their
// compiler vectorises across items.
#ifdef LB_DEQUANT_PER_ITEM

// out = code[c] * absmax, then + offset (two roundings, as on the CPU).
__kernel void dequantize_blockwise(__global const uchar* codes, __global const float* absmax,
                                   __global const float* code, ulong n, uint block_shift,
                                   __global void* out, int out_type, float offset) {
  const size_t i = get_global_id(0) * LB_DEQUANT_PER_ITEM;
  if (i >= n) return;
  const float m = absmax[i >> block_shift];
#if LB_DEQUANT_PER_ITEM == 16
  if (i + 16 <= n) {
    uchar c[16];
    vstore16(((__global const uchar16*)codes)[i / 16], 0, c);
    float v[16];
    for (int k = 0; k < 16; ++k) {
      const float product = code[c[k]] * m;
      v[k] = product + offset;
    }
    store8_elem(out, out_type, i, v);
    store8_elem(out, out_type, i + 8, v + 8);
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
#if LB_DEQUANT_PER_ITEM == 16
  if (i + 16 <= n) {
    uchar p[8];
    vstore8(((__global const uchar8*)packed)[i / 16], 0, p);
    float v[16];
    for (int k = 0; k < 8; ++k) {
      v[2 * k] = table[15 + (p[k] >> 4)] * m;
      v[2 * k + 1] = table[15 + (p[k] & 15)] * m;
    }
    store8_elem(out, out_type, i, v);
    store8_elem(out, out_type, i + 8, v + 8);
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
// taking LB_PER_ITEM consecutive elements of it (the optimizer update's
// layout: GPUs 8 per item with vector accesses, CPU devices a block per item).
// The items of a block meet once, in local memory, for its absmax.

// The item's elements of x: `len` of them inside the tensor, zeros after.
inline void load_item_values(__global const void* x, int type, size_t begin, int len, bool whole,
                             float* v) {
  if (whole) {
#if LB_LANES == 1
    for (int k = 0; k < LB_PER_ITEM; ++k) v[k] = load_elem(x, type, begin + k);
#else
    for (int c = 0; c < LB_PER_ITEM; c += 8) load8_elem(x, type, begin + c, v + c);
#endif
  } else {
    for (int k = 0; k < LB_PER_ITEM; ++k) v[k] = k < len ? load_elem(x, type, begin + k) : 0.0f;
  }
}

// The block's absmax from its items' values: the largest magnitude as a bit
// pattern (for non-negative floats the integer order is the float order, and
// NaN lies above inf above every finite value: lb_absmax_max's rule), the
// same in every item. Local: one uint per item; every item must call it.
inline float block_absmax(const float* v, size_t lane, __local uint* maxima) {
  uint bits = 0;
  for (int k = 0; k < LB_PER_ITEM; ++k) bits = max(bits, as_uint(v[k]) & 0x7fffffffu);
#if LB_LANES > 1
  const size_t lid = get_local_id(0);
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

// The first entry whose value is >= r, chosen between it and the one below
// with probability proportional to the distance (bitsandbytes' rule).
inline int stochastic_code(__global const uint* table, float r, float u) {
  __global const float* code = (__global const float*)table;
  if (r <= code[0]) return 0;
  if (r >= code[255]) return 255;
  int lo = 0;
  for (int step = 128; step > 0; step >>= 1) lo += (r >= code[lo + step]) ? step : 0;
  return lo + lb_round_up(r, code[lo], code[lo + 1], u);
}

#define LB_ITEM_GEOMETRY                                                       \
  const size_t b = get_global_id(0) / LB_LANES;                                \
  const size_t lane = get_global_id(0) % LB_LANES;                             \
  const size_t block_begin = b * blocksize;                                    \
  const size_t begin = block_begin + lane * LB_PER_ITEM;                       \
  const bool active = block_begin < n;                                         \
  const bool whole = block_begin + blocksize <= n;                             \
  const int len = begin >= n ? 0 : (int)min((size_t)LB_PER_ITEM, (size_t)n - begin)

// Codes of x / absmax in `table` (kernels/opencl/code_table.h): the nearest
// entry, or a stochastic neighbour.
__kernel void quantize_blockwise(__global const void* x, int x_type, ulong n, uint blocksize,
                                 __global const uint* restrict table, __global float* absmax,
                                 __global uchar* codes, int stochastic, uint seed_lo,
                                 uint seed_hi, __local uint* maxima) {
  LB_ITEM_GEOMETRY;
  float v[LB_PER_ITEM];
  load_item_values(x, x_type, begin, len, whole, v);
  const float m = block_absmax(v, lane, maxima);
  if (!active) return;
  uchar q[LB_PER_ITEM];
  if (!lb_absmax_scales(m)) {
    for (int k = 0; k < LB_PER_ITEM; ++k) q[k] = (uchar)table[LB_TABLE_ZERO];
  } else if (stochastic) {
    for (int k = 0; k < LB_PER_ITEM; ++k) {
      const size_t i = begin + k;
      const float u = lb_uniform(seed_lo, seed_hi, (uint)i, (uint)(i >> 32));
      q[k] = (uchar)stochastic_code(table, v[k] / m, u);
    }
  } else if (table[LB_TABLE_STEPS] == 1) {
    for (int k = 0; k < LB_PER_ITEM; ++k) q[k] = (uchar)encode_code(table, v[k] / m, true);
  } else {
    for (int k = 0; k < LB_PER_ITEM; ++k) q[k] = (uchar)encode_code(table, v[k] / m, false);
  }
  if (whole) {
#if LB_LANES == 1
    for (int k = 0; k < LB_PER_ITEM; ++k) codes[begin + k] = q[k];
#else
    for (int c = 0; c < LB_PER_ITEM; c += 8) ((__global uchar8*)codes)[(begin + c) / 8] = vload8(0, q + c);
#endif
  } else {
    for (int k = 0; k < len; ++k) codes[begin + k] = q[k];
  }
  if (lane == 0) absmax[b] = m;
}

// 4-bit codes: `table` holds the format's 15 midpoints (then its values),
// `sorted_code` its codes in value order, nibble k for the k-th smallest.
// A negative value that rounds to the zero entry takes negative_zero_code.
__kernel void quantize_4bit(__global const void* x, int x_type, ulong n, uint blocksize,
                            __global const float* table, ulong sorted_code, uint zero_code,
                            uint negative_zero_code, __global float* absmax,
                            __global uchar* packed, __local uint* maxima) {
  LB_ITEM_GEOMETRY;
  float mid[15];
  for (int k = 0; k < 15; ++k) mid[k] = table[k];
  float v[LB_PER_ITEM];
  load_item_values(x, x_type, begin, len, whole, v);
  const float m = block_absmax(v, lane, maxima);
  if (!active) return;
  const bool scales = lb_absmax_scales(m);
  uchar nib[LB_PER_ITEM];
  for (int k = 0; k < LB_PER_ITEM; ++k) {
    // Elements past the tensor's end (zeros) encode 0: the pad nibble.
    const float r = scales ? v[k] / m : 0.0f;
    uint pos = 0;
    for (int j = 0; j < 15; ++j) pos += r > mid[j] ? 1 : 0;
    const uint c = (uint)(sorted_code >> (4 * pos)) & 15u;
    nib[k] = (uchar)((c == zero_code && r < 0.0f) ? negative_zero_code : c);
  }
  uchar bytes[LB_PER_ITEM / 2];
  for (int k = 0; k < LB_PER_ITEM / 2; ++k) bytes[k] = (uchar)(nib[2 * k] << 4 | nib[2 * k + 1]);
  if (whole) {
#if LB_LANES == 1
    for (int k = 0; k < LB_PER_ITEM / 2; ++k) packed[begin / 2 + k] = bytes[k];
#else
    for (int c = 0; c < LB_PER_ITEM / 2; c += 4)
      ((__global uchar4*)packed)[(begin / 2 + c) / 4] = vload4(0, bytes + c);
#endif
  } else {
    for (int k = 0; 2 * k < len; ++k) packed[begin / 2 + k] = bytes[k];
  }
  if (lane == 0) absmax[b] = m;
}
#endif
