// Blockwise 8-bit and 4-bit (NF4/FP4) quantization: the OpenCL twin of
// kernels/cpu/blockwise_8bit.cpp and quantize_4bit.cpp. Same rules, same bits.
#pragma OPENCL FP_CONTRACT OFF

// max |x| over one block, reduced across the work-group (size: power of two);
// NaN if the block holds one (lb_absmax_max; fmax would drop it).
inline float group_absmax(__global const void* x, int type, size_t begin, size_t end,
                          __local float* scratch) {
  const size_t lid = get_local_id(0);
  const size_t lsize = get_local_size(0);
  float m = 0.0f;
  for (size_t i = begin + lid; i < end; i += lsize)
    m = lb_absmax_max(m, fabs(load_elem(x, type, i)));
  scratch[lid] = m;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (size_t s = lsize / 2; s > 0; s /= 2) {
    if (lid < s) scratch[lid] = lb_absmax_max(scratch[lid], scratch[lid + s]);
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  m = scratch[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  return m;
}

inline int stochastic_code(__local const float* code, float r, float u) {
  if (r <= code[0]) return 0;
  if (r >= code[255]) return 255;
  int lo = 0;
  for (int step = 128; step > 0; step >>= 1) lo += (r >= code[lo + step]) ? step : 0;
  return lo + lb_round_up(r, code[lo], code[lo + 1], u);
}

// One work-group per block.
__kernel void quantize_blockwise(__global const void* x, int x_type, ulong n, uint blocksize,
                                 __global const float* code, __global float* absmax, __global uchar* codes, int stochastic,
                                 uint seed_lo, uint seed_hi, __local float* scratch,
                                 __local float* lcode) {
  const size_t b = get_group_id(0);
  const size_t lid = get_local_id(0);
  const size_t lsize = get_local_size(0);
  for (size_t i = lid; i < 256; i += lsize) lcode[i] = code[i];
  const size_t begin = b * blocksize;
  const size_t end = min((size_t)n, begin + blocksize);
  const float m = group_absmax(x, x_type, begin, end, scratch);
  if (lid == 0) absmax[b] = m;
  if (!lb_absmax_scales(m)) {
    const uchar zero = zero_code_of(lcode);
    for (size_t i = begin + lid; i < end; i += lsize) codes[i] = zero;
    return;
  }
  for (size_t i = begin + lid; i < end; i += lsize) {
    const float r = load_elem(x, x_type, i) / m;
    if (stochastic)
      codes[i] = (uchar)stochastic_code(lcode, r,
                                        lb_uniform(seed_lo, seed_hi, (uint)i, (uint)(i >> 32)));
    else
      codes[i] = (uchar)nearest_code(lcode, r);
  }
}

// One work-item per element.
__kernel void dequantize_blockwise(__global const uchar* codes, __global const float* absmax,
                                   __global const float* code, ulong n, uint blocksize,
                                   __global void* out, int out_type, float offset) {
  const size_t i = get_global_id(0);
  if (i >= n) return;
  const float v = code[codes[i]] * absmax[i / blocksize];
  store_elem(out, out_type, i, v + offset);
}

// table: 15 midpoints, then the 16 code values. sorted_code: codes by value.
inline uchar encode_4bit(float r, __global const float* table, __global const uchar* sorted_code,
                         uchar zero_code, uchar negative_zero_code) {
  int pos = 0;
  for (int k = 0; k < 15; ++k) pos += r > table[k] ? 1 : 0;
  const uchar c = sorted_code[pos];
  return (c == zero_code && r < 0.0f) ? negative_zero_code : c;
}

// One work-group per block; each work-item writes whole bytes.
__kernel void quantize_4bit(__global const void* x, int x_type, ulong n, uint blocksize,
                            __global const float* table, __global const uchar* sorted_code,
                            uchar zero_code, uchar negative_zero_code, __global float* absmax,
                            __global uchar* packed, __local float* scratch) {
  const size_t b = get_group_id(0);
  const size_t lid = get_local_id(0);
  const size_t lsize = get_local_size(0);
  const size_t begin = b * blocksize;
  const size_t end = min((size_t)n, begin + blocksize);
  const float m = group_absmax(x, x_type, begin, end, scratch);
  if (lid == 0) absmax[b] = m;
  for (size_t i = begin + 2 * lid; i < end; i += 2 * lsize) {
    const int scales = lb_absmax_scales(m);
    const float r0 = scales ? load_elem(x, x_type, i) / m : 0.0f;
    const float r1 = (i + 1 < end && scales) ? load_elem(x, x_type, i + 1) / m : 0.0f;
    const uchar hi = encode_4bit(r0, table, sorted_code, zero_code, negative_zero_code);
    const uchar lo = encode_4bit(r1, table, sorted_code, zero_code, negative_zero_code);
    packed[i / 2] = (uchar)(hi << 4 | lo);
  }
}

// One work-item per packed byte.
__kernel void dequantize_4bit(__global const uchar* packed, __global const float* absmax,
                              ulong n, uint blocksize, __global const float* table,
                              __global void* out, int out_type) {
  const size_t j = get_global_id(0);
  const size_t i = 2 * j;
  if (i >= n) return;
  const uchar p = packed[j];
  const float m = absmax[i / blocksize];
  store_elem(out, out_type, i, table[15 + (p >> 4)] * m);
  if (i + 1 < n) store_elem(out, out_type, i + 1, table[15 + (p & 15)] * m);
}
