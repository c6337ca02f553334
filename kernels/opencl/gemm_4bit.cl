// 4-bit matmul with a frozen NF4/FP4 weight: the OpenCL twin of
// kernels/cpu/gemv_4bit.cpp and gemm_4bit.cpp. Codes are decoded where they
// are used (a tile in local memory for gemm), never written back as floats.
// Built with -DTILE=<t>, t*t work-items per gemm work-group (t chosen from the
// device's work-group limit).
#pragma OPENCL FP_CONTRACT OFF

// The weight, as kernels::Weight4bit describes it. `absmax` holds float32
// scales, or uint8 codes when double_quant is set. `table`: the format's 15
// midpoints, then its 16 code values (the buffer quantize.cl uses).
#define WEIGHT_PARAMS                                                                   \
  __global const uchar *packed, __global const uchar *absmax,                           \
      __global const float *nested_absmax, __global const float *nested_code,           \
      int double_quant, uint nested_shift, float offset, uint block_shift,              \
      __global const float *table
#define WEIGHT_ARGS                                                                     \
  packed, absmax, nested_absmax, nested_code, double_quant, nested_shift, offset,       \
      block_shift, table

// The scale of block b: the float operations of dequantize_blockwise
// (product, then + offset), as on the CPU.
inline float block_scale(WEIGHT_PARAMS, size_t b) {
  if (!double_quant) return ((__global const float*)absmax)[b];
  const float v = nested_code[absmax[b]] * nested_absmax[b >> nested_shift];
  return v + offset;
}

// W at flat index f (element 2j of the flat weight in the high nibble of byte j).
inline float weight_at(WEIGHT_PARAMS, size_t f) {
  const uchar p = packed[f >> 1];
  const uint code = (f & 1) ? (p & 15) : (p >> 4);
  return table[15 + code] * block_scale(WEIGHT_ARGS, f >> block_shift);
}

// y[o] = sum_k W(o, k) x[k] (+ bias[o]): one work-group per output row.
// Work-items stride over whole packed bytes (adjacent items, adjacent
// bytes), decoding both nibbles with one load and one block scale: the two
// elements of a byte share a block (blocks hold an even number of elements).
__kernel void gemv_4bit(__global const void* x, int dtype, ulong in_features, WEIGHT_PARAMS,
                        __global const void* bias, int has_bias, __global void* y,
                        __local float* scratch) {
  const size_t o = get_group_id(0);
  const size_t lid = get_local_id(0);
  const size_t lsize = get_local_size(0);
  const size_t f0 = o * in_features, f1 = f0 + in_features;
  float sum = 0.0f;
  for (size_t j = f0 / 2 + lid; 2 * j < f1; j += lsize) {
    const uchar p = packed[j];
    const float s = block_scale(WEIGHT_ARGS, (2 * j) >> block_shift);
    if (2 * j >= f0) sum += table[15 + (p >> 4)] * s * load_elem(x, dtype, 2 * j - f0);
    if (2 * j + 1 < f1) sum += table[15 + (p & 15)] * s * load_elem(x, dtype, 2 * j + 1 - f0);
  }
  scratch[lid] = sum;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (size_t s = lsize / 2; s > 0; s /= 2) {
    if (lid < s) scratch[lid] += scratch[lid + s];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid == 0) {
    float v = scratch[0];
    if (has_bias) v += load_elem(bias, dtype, o);
    store_elem(y, dtype, o, v);
  }
}

// c[M, N] = a[M, K] * B (+ bias[N]), B(k, n) = W(n, k) when `transposed`
// (forward: y = x W^T, N = out, K = in), else W(k, n) (input gradient:
// dx = dy W, N = in, K = out). Classic local-memory tiling; each work-item
// owns one output and the work-group loads its tiles with coalesced reads.
__kernel void gemm_4bit(__global const void* a, int dtype, ulong M, ulong N, ulong K,
                        int transposed, ulong in_features, WEIGHT_PARAMS,
                        __global const void* bias, int has_bias, __global void* c) {
  __local float a_tile[TILE][TILE];
  __local float b_tile[TILE][TILE];  // b_tile[k][n]
  const size_t lx = get_local_id(0), ly = get_local_id(1);
  const size_t n0 = get_group_id(0) * TILE, m0 = get_group_id(1) * TILE;
  const size_t row = m0 + ly, col = n0 + lx;
  float acc = 0.0f;
  for (size_t k0 = 0; k0 < K; k0 += TILE) {
    const size_t ka = k0 + lx;
    a_tile[ly][lx] = (row < M && ka < K) ? load_elem(a, dtype, row * K + ka) : 0.0f;
    if (transposed) {
      // Item (ly, lx) reads W(n0 + ly, k0 + lx): consecutive lx, consecutive bytes.
      const size_t n = n0 + ly, k = k0 + lx;
      b_tile[lx][ly] = (n < N && k < K) ? weight_at(WEIGHT_ARGS, n * in_features + k) : 0.0f;
    } else {
      const size_t k = k0 + ly, n = n0 + lx;
      b_tile[ly][lx] = (n < N && k < K) ? weight_at(WEIGHT_ARGS, k * in_features + n) : 0.0f;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int t = 0; t < TILE; ++t) acc += a_tile[ly][t] * b_tile[t][lx];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (row < M && col < N) {
    if (has_bias) acc += load_elem(bias, dtype, col);
    store_elem(c, dtype, row * N + col, acc);
  }
}
