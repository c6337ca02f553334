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

// y[o] = sum_k W(o, k) x[k] (+ bias[o]): LB_GEMV_ROW_ITEMS work-items per
// output row, the rest of the work-group on the next rows. Where rows hold a
// multiple of 32 elements, each item takes 32-element chunks of its row (16
// bytes, one load; one block, one scale: blocks hold a multiple of 32), the
// row's items neighbouring chunks, and multiplies the chunk's sum of
// code value x activation by the scale once. Other rows go byte by byte. The
// 16 code values sit in local memory (distinct entries, distinct banks).
// Local: one float per item, and 16 floats.
#define LB_GEMV_ROW_ITEMS 32
__kernel void gemv_4bit(__global const void* x, int dtype, ulong in_features, ulong out_features,
                        WEIGHT_PARAMS, __global const void* bias, int has_bias,
                        __global void* y, __local float* partial, __local float* value) {
  const size_t lid = get_local_id(0);
  if (lid < 16) value[lid] = table[15 + lid];
  barrier(CLK_LOCAL_MEM_FENCE);
  const size_t o = get_group_id(0) * (get_local_size(0) / LB_GEMV_ROW_ITEMS) +
                   lid / LB_GEMV_ROW_ITEMS;
  const size_t t = lid % LB_GEMV_ROW_ITEMS;
  float sum = 0.0f;
  if (o < out_features) {
    const size_t f0 = o * in_features, f1 = f0 + in_features;
    if (in_features % 32 == 0) {
      __global const uint4* words = (__global const uint4*)packed + f0 / 32;
      for (size_t c = t; 32 * c < in_features; c += LB_GEMV_ROW_ITEMS) {
        const uint4 w = words[c];
        float xv[32];
        for (int k = 0; k < 32; k += 8) load8_elem(x, dtype, 32 * c + k, xv + k);
        const uint wv[4] = {w.x, w.y, w.z, w.w};
        float chunk = 0.0f;
        for (int q = 0; q < 4; ++q)
          for (int j = 0; j < 4; ++j) {
            // Byte j of word q holds elements 8q + 2j (high nibble) and 8q + 2j + 1.
            const uint byte = (wv[q] >> (8 * j)) & 0xffu;
            chunk += value[byte >> 4] * xv[8 * q + 2 * j];
            chunk += value[byte & 15u] * xv[8 * q + 2 * j + 1];
          }
        sum += chunk * block_scale(WEIGHT_ARGS, (f0 + 32 * c) >> block_shift);
      }
    } else {
      // Whole packed bytes, both nibbles with one load and one block scale
      // (the two elements of a byte share a block: blocks hold an even number).
      for (size_t j = f0 / 2 + t; 2 * j < f1; j += LB_GEMV_ROW_ITEMS) {
        const uchar p = packed[j];
        const float s = block_scale(WEIGHT_ARGS, (2 * j) >> block_shift);
        if (2 * j >= f0) sum += value[p >> 4] * s * load_elem(x, dtype, 2 * j - f0);
        if (2 * j + 1 < f1) sum += value[p & 15] * s * load_elem(x, dtype, 2 * j + 1 - f0);
      }
    }
  }
  partial[lid] = sum;
  barrier(CLK_LOCAL_MEM_FENCE);
  if (t != 0 || o >= out_features) return;
  float v = 0.0f;
  for (int k = 0; k < LB_GEMV_ROW_ITEMS; ++k) v += partial[lid + k];
  if (has_bias) v += load_elem(bias, dtype, o);
  store_elem(y, dtype, o, v);
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
