// 4-bit matmul with a frozen NF4/FP4 weight: the OpenCL twin of
// kernels/cpu/gemv_4bit.cpp and gemm_4bit.cpp. Codes are decoded where they
// are used (a tile in local memory for gemm), never written back as floats.
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

#ifdef LB_WM
// c[M, N] = a[M, K] * B (+ bias[N]), B(k, n) = W(n, k) when `transposed`
// (forward: y = x W^T, N = out, K = in), else W(k, n) (input gradient:
// dx = dy W, N = in, K = out). A register-tiled GEMM, built per shape class
// with LB_WM x LB_WN work-items (256), each making LB_TM x LB_TN outputs
// (multiples of 4): a work-group owns a BM x BN tile of c and steps through
// K sixteen at a time. Each step stages the activations' BM x 16 tile and
// the weight's 16 x BN tile, decoded to floats, in local memory; an item
// then reads TM + TN values per k (16-byte loads; its columns are 4-wide
// strips LB_WN * 4 apart, so that a warp's loads hit distinct banks) and
// makes TM * TN multiply-adds. The weight is decoded 8 elements at a time
// (one 32-bit load and one block scale: 8 aligned elements share a block)
// where its rows hold a multiple of 8, else element by element. With
// `partial` set, work-group z takes K's range [z * k_split, (z + 1) * k_split)
// and writes float sums there for gemm_4bit_reduce.
#define LB_BK 16
#define LB_BM (LB_WM * LB_TM)
#define LB_BN (LB_WN * LB_TN)
// Row pitches of the local tiles: + 4 keeps rows 16-byte aligned and spreads
// the activations' transposed stores over more banks.
#define LB_AP (LB_BM + 4)
#define LB_BP (LB_BN + 4)
#ifdef FP_FAST_FMAF
#define LB_MAD(a, b, c) fma(a, b, c)
#else
#define LB_MAD(a, b, c) mad(a, b, c)
#endif

// W's flat elements [f, f + 8) into v, of which the first `valid` lie in the
// tile's range (zeros after): where all 8 do and rows hold a multiple of 8
// elements (so f is a multiple of 8), one word and one scale; else element
// by element.
inline void decode8(WEIGHT_PARAMS, __local const float* value, size_t f, size_t valid,
                    bool words, float* v) {
  if (words && valid == 8) {
    const uint w = ((__global const uint*)packed)[f / 8];
    const float s = block_scale(WEIGHT_ARGS, f >> block_shift);
    for (int j = 0; j < 4; ++j) {
      const uint byte = (w >> (8 * j)) & 0xffu;
      v[2 * j] = value[byte >> 4] * s;
      v[2 * j + 1] = value[byte & 15u] * s;
    }
    return;
  }
  for (int j = 0; j < 8; ++j) v[j] = (size_t)j < valid ? weight_at(WEIGHT_ARGS, f + j) : 0.0f;
}

__kernel __attribute__((reqd_work_group_size(LB_WN, LB_WM, 1))) void gemm_4bit(
    __global const void* a, int dtype, ulong M, ulong N, ulong K, int transposed,
    ulong in_features, WEIGHT_PARAMS, __global const void* bias, int has_bias,
    __global void* c, ulong k_split, __global float* partial) {
  // Declared as float4 for their 16-byte alignment (a vector load from a
  // misaligned address faults on NVIDIA).
  __local float4 as4[LB_BK * LB_AP / 4];
  __local float4 bs4[LB_BK * LB_BP / 4];
  __local float* as = (__local float*)as4;
  __local float* bs = (__local float*)bs4;
  __local float value[16];
  const size_t tx = get_local_id(0), ty = get_local_id(1);
  const size_t lid = ty * LB_WN + tx;
  if (lid < 16) value[lid] = table[15 + lid];
  const size_t n0 = get_group_id(0) * LB_BN, m0 = get_group_id(1) * LB_BM;
  const size_t k_begin = get_group_id(2) * k_split;
  const size_t k_end = min((size_t)K, k_begin + (size_t)k_split);
  const bool words = in_features % 8 == 0;
  float acc[LB_TM][LB_TN];
  for (int i = 0; i < LB_TM; ++i)
    for (int j = 0; j < LB_TN; ++j) acc[i][j] = 0.0f;
  for (size_t k0 = k_begin; k0 < k_end; k0 += LB_BK) {
    // The last step's reads are done (and, the first time, `value` is written).
    barrier(CLK_LOCAL_MEM_FENCE);
    for (size_t idx = lid; idx < LB_BM * LB_BK; idx += LB_WM * LB_WN) {
      const size_t row = idx / LB_BK, kk = idx % LB_BK;
      const size_t m = m0 + row, k = k0 + kk;
      as[kk * LB_AP + row] = (m < M && k < k_end) ? load_elem(a, dtype, m * K + k) : 0.0f;
    }
    if (transposed) {
      // B(k, n) = W(n, k): 8 consecutive k of row n per word.
      for (size_t g = lid; g < LB_BN * (LB_BK / 8); g += LB_WM * LB_WN) {
        const size_t nn = g / (LB_BK / 8), kk = (g % (LB_BK / 8)) * 8;
        const size_t n = n0 + nn, k = k0 + kk;
        float v[8];
        const size_t valid = n < N && k < k_end ? min((size_t)8, k_end - k) : 0;
        decode8(WEIGHT_ARGS, value, n * in_features + k, valid, words, v);
        for (int j = 0; j < 8; ++j) bs[(kk + j) * LB_BP + nn] = v[j];
      }
    } else {
      // B(k, n) = W(k, n): 8 consecutive n of row k per word.
      for (size_t g = lid; g < LB_BK * (LB_BN / 8); g += LB_WM * LB_WN) {
        const size_t kk = g / (LB_BN / 8), nn = (g % (LB_BN / 8)) * 8;
        const size_t k = k0 + kk, n = n0 + nn;
        float v[8];
        const size_t valid = k < k_end && n < N ? min((size_t)8, (size_t)N - n) : 0;
        decode8(WEIGHT_ARGS, value, k * in_features + n, valid, words, v);
        for (int j = 0; j < 8; ++j) bs[kk * LB_BP + nn + j] = v[j];
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int kk = 0; kk < LB_BK; ++kk) {
      float av[LB_TM], bv[LB_TN];
      __local const float4* arow = (__local const float4*)(as + kk * LB_AP + ty * LB_TM);
      for (int i = 0; i < LB_TM / 4; ++i) vstore4(arow[i], i, av);
      __local const float4* brow = (__local const float4*)(bs + kk * LB_BP) + tx;
      for (int j = 0; j < LB_TN / 4; ++j) vstore4(brow[j * LB_WN], j, bv);
      for (int i = 0; i < LB_TM; ++i)
        for (int j = 0; j < LB_TN; ++j) acc[i][j] = LB_MAD(av[i], bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < LB_TM; ++i) {
    const size_t m = m0 + ty * LB_TM + i;
    if (m >= M) break;
    for (int j = 0; j < LB_TN; ++j) {
      const size_t n = n0 + (j / 4) * (LB_WN * 4) + tx * 4 + (j % 4);
      if (n >= N) continue;
      if (partial) {
        partial[(get_group_id(2) * M + m) * N + n] = acc[i][j];
      } else {
        float v = acc[i][j];
        if (has_bias) v += load_elem(bias, dtype, n);
        store_elem(c, dtype, m * N + n, v);
      }
    }
  }
}
#endif

// c = the sum of gemm_4bit's `splits` partial sums, in order (+ bias), one
// item per element.
__kernel void gemm_4bit_reduce(__global const float* partial, uint splits, ulong M, ulong N,
                               __global const void* bias, int has_bias, int dtype,
                               __global void* c) {
  const size_t i = get_global_id(0);
  if (i >= M * N) return;
  float v = 0.0f;
  for (uint s = 0; s < splits; ++s) v += partial[s * M * N + i];
  if (has_bias) v += load_elem(bias, dtype, i % N);
  store_elem(c, dtype, i, v);
}
