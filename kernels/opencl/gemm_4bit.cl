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

#ifdef FP_FAST_FMAF
#define LB_MAD(a, b, c) fma(a, b, c)
#else
#define LB_MAD(a, b, c) mad(a, b, c)
#endif

// y[o] = sum_k W(o, k) x[k] (+ bias[o]): LB_GEMV_ROW_ITEMS work-items per
// LB_GEMV_ROWS output rows, the rest of the work-group on the next rows.
// Where rows hold a multiple of 32 elements, each item takes 32-element
// chunks of its rows (16 bytes, one load per row; one block, one scale:
// blocks hold a multiple of 32), the items of a row neighbouring chunks, and
// multiplies a chunk's sum of code value x activation by the scale once. The
// activations of a chunk are converted once for all LB_GEMV_ROWS rows, whose
// loads are issued together. Other rows go byte by byte. The 16 code values
// and the nested code table sit in local memory.
// Local: LB_GEMV_ROWS floats per item, and 16 floats.
#define LB_GEMV_ROW_ITEMS 32
#ifndef LB_GEMV_ROWS
#define LB_GEMV_ROWS 1
#endif
__kernel void gemv_4bit(__global const void* x, int dtype, ulong in_features, ulong out_features,
                        WEIGHT_PARAMS, __global const void* bias, int has_bias,
                        __global void* y, __local float* partial, __local float* value) {
  __local float nested[256];
  const size_t lid = get_local_id(0), items = get_local_size(0);
  if (lid < 16) value[lid] = table[15 + lid];
  if (double_quant)
    for (size_t i = lid; i < 256; i += items) nested[i] = nested_code[i];
  barrier(CLK_LOCAL_MEM_FENCE);
  const size_t slot = lid / LB_GEMV_ROW_ITEMS, t = lid % LB_GEMV_ROW_ITEMS;
  const size_t o0 = (get_group_id(0) * (items / LB_GEMV_ROW_ITEMS) + slot) * LB_GEMV_ROWS;
  float sum[LB_GEMV_ROWS];
  for (int r = 0; r < LB_GEMV_ROWS; ++r) sum[r] = 0.0f;
  if (in_features % 32 == 0) {
    const size_t chunks = in_features / 32;
    __global const uint4* words = (__global const uint4*)packed;
    for (size_t c = t; c < chunks; c += LB_GEMV_ROW_ITEMS) {
      uint4 w[LB_GEMV_ROWS];
      float s[LB_GEMV_ROWS];
      for (int r = 0; r < LB_GEMV_ROWS; ++r) {
        const size_t o = min(o0 + r, (size_t)out_features - 1);  // past the end: any row
        w[r] = words[o * chunks + c];
        const size_t b = (o * in_features + 32 * c) >> block_shift;
        // block_scale's operations, the nested table read from local memory.
        s[r] = double_quant ? nested[absmax[b]] * nested_absmax[b >> nested_shift] + offset
                            : ((__global const float*)absmax)[b];
      }
      float xv[32];
      for (int k = 0; k < 32; k += 8) load8_elem(x, dtype, 32 * c + k, xv + k);
      for (int r = 0; r < LB_GEMV_ROWS; ++r) {
        const uint wv[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
        float chunk = 0.0f;
        for (int q = 0; q < 4; ++q)
          for (int j = 0; j < 4; ++j) {
            // Byte j of word q holds elements 8q + 2j (high nibble) and 8q + 2j + 1.
            const uint byte = (wv[q] >> (8 * j)) & 0xffu;
            chunk = LB_MAD(value[byte >> 4], xv[8 * q + 2 * j], chunk);
            chunk = LB_MAD(value[byte & 15u], xv[8 * q + 2 * j + 1], chunk);
          }
        sum[r] += chunk * s[r];
      }
    }
  } else {
    for (int r = 0; r < LB_GEMV_ROWS; ++r) {
      const size_t o = o0 + r;
      if (o >= out_features) break;
      const size_t f0 = o * in_features, f1 = f0 + in_features;
      // Whole packed bytes, both nibbles with one load and one block scale
      // (the two elements of a byte share a block: blocks hold an even number).
      for (size_t j = f0 / 2 + t; 2 * j < f1; j += LB_GEMV_ROW_ITEMS) {
        const uchar p = packed[j];
        const float sc = block_scale(WEIGHT_ARGS, (2 * j) >> block_shift);
        if (2 * j >= f0) sum[r] += value[p >> 4] * sc * load_elem(x, dtype, 2 * j - f0);
        if (2 * j + 1 < f1) sum[r] += value[p & 15] * sc * load_elem(x, dtype, 2 * j + 1 - f0);
      }
    }
  }
  for (int r = 0; r < LB_GEMV_ROWS; ++r) partial[r * items + lid] = sum[r];
  barrier(CLK_LOCAL_MEM_FENCE);
  // Item t < LB_GEMV_ROWS of a slot adds up row o0 + t.
  const size_t o = o0 + t;
  if (t >= LB_GEMV_ROWS || o >= out_features) return;
  __local const float* row = partial + t * items + slot * LB_GEMV_ROW_ITEMS;
  float v = 0.0f;
  for (int k = 0; k < LB_GEMV_ROW_ITEMS; ++k) v += row[k];
  if (has_bias) v += load_elem(bias, dtype, o);
  store_elem(y, dtype, o, v);
}

#ifdef LB_WM
// c[M, N] = a[M, K] * B (+ bias[N]), B(k, n) = W(n, k) when `transposed`
// (forward: y = x W^T, N = out, K = in), else W(k, n) (input gradient:
// dx = dy W, N = in, K = out). A register-tiled GEMM, built per shape class
// with LB_WM x LB_WN work-items, each making LB_TM x LB_TN outputs
// (multiples of 4): a work-group owns a BM x BN tile of c and steps through
// K sixteen at a time. Each step stages the activations' BM x 16 tile and
// the weight's 16 x BN tile, decoded to floats, in local memory; an item
// then reads TM + TN values per k (16-byte loads; its columns are 4-wide
// strips LB_WN * 4 apart, so that a warp's loads hit distinct banks) and
// makes TM * TN multiply-adds.
//
// Staging goes in groups of 8 consecutive elements: 8 activations of a row
// (one or two 16-byte loads), 8 weights of a row (one 32-bit word and one
// block scale: 8 aligned elements share a block). With LB_PREFETCH (GPUs)
// the local tiles are double buffered: the global loads of the next step are
// issued before this step's multiply-adds and land in the other buffer after
// them, so one barrier per step suffices and the loads' latency hides behind
// the arithmetic. Without (CPU devices) a step loads, stores and multiplies
// between two barriers. Edge groups (the tile past M, N or K, rows that are
// no multiple of 8) are read element by element instead. With `partial` set,
// work-group z takes K's range [z * k_split, (z + 1) * k_split) and writes
// float sums there for gemm_4bit_reduce.
#define LB_BK 16
// On GPUs (LB_PREFETCH) two more things (H100 through NVIDIA's OpenCL,
// docs/PERFORMANCE.md, 2026-12-06): an item reads its values for k + 1 from
// local memory before the multiply-adds of k (LB_FRAG: 7-13% less time at
// batch 512; PoCL runs it no faster), and each warp's 32 items form a 4 x 8
// block of the tile (LB_WARP_TILE: a further 13-14% at batch 512, 0-3% at 64).
#define LB_FRAG LB_PREFETCH
#define LB_WARP_TILE (LB_PREFETCH && LB_WN % 8 == 0 && LB_WM % 4 == 0)
// lb_idx (common.cl) is 32-bit where the host found the activations' and the weight's flat
// indices below 2^31 (on the H100, against 64-bit: 29-31% less time at batch 64, 4-9% at
// 512, 15% at 16 on the large shapes); outputs and partial sums keep 64-bit addresses.
#define LB_BM (LB_WM * LB_TM)
#define LB_BN (LB_WN * LB_TN)
#define LB_ITEMS (LB_WM * LB_WN)
// Groups of 8 per step, and per item (rounded up).
#define LB_A_GROUPS (LB_BM * LB_BK / 8)
#define LB_B_GROUPS (LB_BN * LB_BK / 8)
#define LB_A_PER ((LB_A_GROUPS + LB_ITEMS - 1) / LB_ITEMS)
#define LB_B_PER ((LB_B_GROUPS + LB_ITEMS - 1) / LB_ITEMS)
// Row pitches of the local tiles: + 4 keeps rows 16-byte aligned and spreads
// the transposed stores over more banks.
#define LB_AP (LB_BM + 4)
#define LB_BP (LB_BN + 4)
// A group's global data between its load and its store to local memory:
// 8 activations as raw bits (16 bytes of f16/bf16, or 32 of f32), or a
// weight word with its block's scale parts. `fast` is false for edge groups.
typedef struct {
  uint4 lo, hi;
  int fast;
} RawA;

typedef struct {
  uint word;
  uint code;    // the block's absmax code (double quantization)
  float outer;  // its nested absmax, or the block's float absmax
  int fast;
} RawB;

// Where group g of a step lies: A(row, k..k+8), and B's 8 elements.
inline void a_group(lb_idx g, lb_idx* row, lb_idx* kk) {
  *row = g / (LB_BK / 8);
  *kk = (g % (LB_BK / 8)) * 8;
}

inline void b_group(lb_idx g, int transposed, lb_idx* kk, lb_idx* nn) {
  if (transposed) {  // B(k, n) = W(n, k): 8 consecutive k of row n
    *nn = g / (LB_BK / 8);
    *kk = (g % (LB_BK / 8)) * 8;
  } else {  // B(k, n) = W(k, n): 8 consecutive n of row k
    *kk = g / (LB_BN / 8);
    *nn = (g % (LB_BN / 8)) * 8;
  }
}

// W's flat index of B(k, n), and how many of the group's 8 elements from
// there lie in the tile's range (zero past it).
inline lb_idx b_flat(int transposed, lb_idx in_features, lb_idx k, lb_idx n) {
  return transposed ? n * in_features + k : k * in_features + n;
}

inline lb_idx b_valid(int transposed, lb_idx N, lb_idx k_end, lb_idx k, lb_idx n) {
  if (k >= k_end || n >= N) return 0;
  return min((lb_idx)8, transposed ? k_end - k : N - n);
}

inline RawA fetch_a(__global const void* a, int dtype, lb_idx M, lb_idx K, lb_idx k_end,
                    bool vec, lb_idx m, lb_idx k) {
  RawA r;
  r.fast = vec && m < M && k < k_end;
  if (r.fast) {
    const lb_idx e = m * K + k;  // a multiple of 8
    if (dtype == LB_F32) {
      r.lo = ((__global const uint4*)a)[e / 4];
      r.hi = ((__global const uint4*)a)[e / 4 + 1];
    } else {
      r.lo = ((__global const uint4*)a)[e / 8];
    }
  }
  return r;
}

// The float value of IEEE half bits h, exactly (every half is a float):
// normals move their exponent bias from 15 to 127, subnormals are their
// integer times 2^-24 (a float normal, so no device flushes it), infinities
// and NaNs keep an all-ones exponent.
inline float lb_half_bits_to_float(uint h) {
  const uint sign = (h & 0x8000u) << 16, mag = h & 0x7fffu;
  uint bits;
  if (mag >= 0x7c00u)
    bits = 0x7f800000u | ((mag & 0x3ffu) << 13);
  else if (mag < 0x400u)
    bits = as_uint((float)mag * 0x1p-24f);
  else
    bits = (mag << 13) + 0x38000000u;  // + (127 - 15) << 23
  return as_float(sign | bits);
}

inline void put_a(RawA r, __global const void* a, int dtype, lb_idx M, lb_idx K, lb_idx k_end,
                  lb_idx m, lb_idx k, __local float* dst) {
  float v[8];
  if (r.fast) {
    if (dtype == LB_F32) {
      vstore4(as_float4(r.lo), 0, v);
      vstore4(as_float4(r.hi), 1, v);
    } else if (dtype == LB_F16) {
      const uint w[4] = {r.lo.x, r.lo.y, r.lo.z, r.lo.w};
      for (int j = 0; j < 4; ++j) {
        v[2 * j] = lb_half_bits_to_float(w[j] & 0xffffu);
        v[2 * j + 1] = lb_half_bits_to_float(w[j] >> 16);
      }
    } else {
      const uint w[4] = {r.lo.x, r.lo.y, r.lo.z, r.lo.w};
      for (int j = 0; j < 4; ++j) {
        v[2 * j] = as_float(w[j] << 16);
        v[2 * j + 1] = as_float(w[j] & 0xffff0000u);
      }
    }
  } else {
    for (int j = 0; j < 8; ++j)
      v[j] = m < M && k + j < k_end ? load_elem(a, dtype, m * K + k + j) : 0.0f;
  }
  for (int j = 0; j < 8; ++j) dst[j * LB_AP] = v[j];
}

inline RawB fetch_b(WEIGHT_PARAMS, bool words, lb_idx f, bool inside) {
  RawB r;
  r.fast = words && inside;
  if (r.fast) {
    r.word = ((__global const uint*)packed)[f / 8];
    const lb_idx b = f >> block_shift;
    if (double_quant) {
      r.code = absmax[b];
      r.outer = nested_absmax[b >> nested_shift];
    } else {
      r.outer = ((__global const float*)absmax)[b];
    }
  }
  return r;
}

// `valid`: how many of the group's 8 elements lie in the tile's range (the
// slow path's; zeros after). `step`: the local distance between them.
inline void put_b(RawB r, WEIGHT_PARAMS, __local const float* value,
                  __local const float* nested, lb_idx f, lb_idx valid, lb_idx step,
                  __local float* dst) {
  float v[8];
  if (r.fast) {
    // block_scale's operations: product, then + offset.
    const float s = double_quant ? nested[r.code] * r.outer + offset : r.outer;
    for (int j = 0; j < 4; ++j) {
      const uint byte = (r.word >> (8 * j)) & 0xffu;
      v[2 * j] = value[byte >> 4] * s;
      v[2 * j + 1] = value[byte & 15u] * s;
    }
  } else {
    for (int j = 0; j < 8; ++j) v[j] = (lb_idx)j < valid ? weight_at(WEIGHT_ARGS, f + j) : 0.0f;
  }
  for (int j = 0; j < 8; ++j) dst[j * step] = v[j];
}

__kernel __attribute__((reqd_work_group_size(LB_WN, LB_WM, 1))) void gemm_4bit(
    __global const void* a, int dtype, ulong M, ulong N, ulong K, int transposed,
    ulong in_features, WEIGHT_PARAMS, __global const void* bias, int has_bias,
    __global void* c, ulong k_split, __global float* partial) {
  // Two buffers per tile where steps overlap, declared as float4 for their
  // 16-byte alignment (a vector load from a misaligned address faults on
  // NVIDIA).
  __local float4 as4[1 + LB_PREFETCH][LB_BK * LB_AP / 4];
  __local float4 bs4[1 + LB_PREFETCH][LB_BK * LB_BP / 4];
  __local float value[16];
  __local float nested[256];
  const lb_idx lid = get_local_id(1) * LB_WN + get_local_id(0);
#if LB_WARP_TILE
  // The item's place in the tile: each warp of 32 items covers 4 x 8 of them,
  // so that a step's reads of the activations and of the weight each touch
  // 4 or 8 distinct 16-byte slots of local memory (one wavefront each).
  const lb_idx lane = lid % 32, warp = lid / 32;
  const lb_idx tx = (warp % (LB_WN / 8)) * 8 + lane % 8;
  const lb_idx ty = (warp / (LB_WN / 8)) * 4 + lane / 8;
#else
  const lb_idx tx = get_local_id(0), ty = get_local_id(1);
#endif
  if (lid < 16) value[lid] = table[15 + lid];
  if (double_quant)
    for (lb_idx i = lid; i < 256; i += LB_ITEMS) nested[i] = nested_code[i];
  const lb_idx n0 = get_group_id(0) * LB_BN, m0 = get_group_id(1) * LB_BM;
  const lb_idx k_begin = get_group_id(2) * k_split;
  const lb_idx k_end = min((lb_idx)K, k_begin + (lb_idx)k_split);
  const bool words = in_features % 8 == 0;
  const bool vec_a = K % 8 == 0;
  float acc[LB_TM][LB_TN];
  for (int i = 0; i < LB_TM; ++i)
    for (int j = 0; j < LB_TN; ++j) acc[i][j] = 0.0f;

  // This step's products from buffer `buf`. With LB_FRAG an item's values for
  // k + 1 are read from local memory before the multiply-adds of k, so the
  // reads' latency hides behind this item's own arithmetic.
#if LB_FRAG
#define LB_LOAD_FRAG(buf, kk, an, bn)                                                      \
  {                                                                                        \
    __local const float4* arow =                                                          \
        (__local const float4*)((__local const float*)as4[buf] + (kk) * LB_AP + ty * LB_TM); \
    __local const float4* brow =                                                          \
        (__local const float4*)((__local const float*)bs4[buf] + (kk) * LB_BP) + tx;     \
    _Pragma("unroll") for (int i = 0; i < LB_TM / 4; ++i) an[i] = arow[i];                \
    _Pragma("unroll") for (int j = 0; j < LB_TN / 4; ++j) bn[j] = brow[j * LB_WN];        \
  }
#define LB_MULTIPLY(buf)                                                                  \
  {                                                                                        \
    float4 an[LB_TM / 4], bn[LB_TN / 4];                                                  \
    LB_LOAD_FRAG(buf, 0, an, bn)                                                          \
    _Pragma("unroll") for (int kk = 0; kk < LB_BK; ++kk) {                                \
      float av[LB_TM], bv[LB_TN];                                                         \
      _Pragma("unroll") for (int i = 0; i < LB_TM / 4; ++i) vstore4(an[i], i, av);        \
      _Pragma("unroll") for (int j = 0; j < LB_TN / 4; ++j) vstore4(bn[j], j, bv);        \
      if (kk + 1 < LB_BK) LB_LOAD_FRAG(buf, kk + 1, an, bn)                               \
      _Pragma("unroll") for (int i = 0; i < LB_TM; ++i)                                   \
      _Pragma("unroll") for (int j = 0; j < LB_TN; ++j)                                   \
        acc[i][j] = LB_MAD(av[i], bv[j], acc[i][j]);                                      \
    }                                                                                      \
  }
#else
#define LB_MULTIPLY(buf)                                                                  \
  for (int kk = 0; kk < LB_BK; ++kk) {                                                    \
    float av[LB_TM], bv[LB_TN];                                                           \
    __local const float4* arow =                                                          \
        (__local const float4*)((__local const float*)as4[buf] + kk * LB_AP + ty * LB_TM); \
    for (int i = 0; i < LB_TM / 4; ++i) vstore4(arow[i], i, av);                          \
    __local const float4* brow = (__local const float4*)((__local const float*)bs4[buf] + \
                                                         kk * LB_BP) + tx;               \
    for (int j = 0; j < LB_TN / 4; ++j) vstore4(brow[j * LB_WN], j, bv);                  \
    for (int i = 0; i < LB_TM; ++i)                                                       \
      for (int j = 0; j < LB_TN; ++j) acc[i][j] = LB_MAD(av[i], bv[j], acc[i][j]);        \
  }
#endif

  // `stmt` for each of this item's groups of the step at k0: activation
  // groups see (row, kk) and (m, k), weight groups (kk, nn) and (k, n); u
  // numbers the item's groups.
#define LB_EACH_A(k0, stmt)                                                               \
  for (int u = 0; u < LB_A_PER; ++u) {                                                    \
    const lb_idx g = lid + (lb_idx)u * LB_ITEMS;                                          \
    lb_idx row, kk;                                                                       \
    a_group(g, &row, &kk);                                                                \
    const lb_idx m = m0 + row, k = (k0) + kk;                                             \
    if (g < LB_A_GROUPS) stmt;                                                            \
  }
#define LB_EACH_B(k0, stmt)                                                               \
  for (int u = 0; u < LB_B_PER; ++u) {                                                    \
    const lb_idx g = lid + (lb_idx)u * LB_ITEMS;                                          \
    lb_idx kk, nn;                                                                        \
    b_group(g, transposed, &kk, &nn);                                                     \
    const lb_idx k = (k0) + kk, n = n0 + nn;                                              \
    if (g < LB_B_GROUPS) stmt;                                                            \
  }
#define LB_A_DST(buf) ((__local float*)as4[buf] + kk * LB_AP + row)
#define LB_B_DST(buf) ((__local float*)bs4[buf] + kk * LB_BP + nn)

#if LB_PREFETCH
  RawA ra[LB_A_PER];
  RawB rb[LB_B_PER];
  // The global loads of the step at k0 into ra / rb, and their stores into buffer `buf`.
#define LB_FETCH(k0)                                                                      \
  LB_EACH_A(k0, ra[u] = fetch_a(a, dtype, M, K, k_end, vec_a, m, k))                      \
  LB_EACH_B(k0, rb[u] = fetch_b(WEIGHT_ARGS, words, b_flat(transposed, in_features, k, n), \
                                n < N && k < k_end))
#define LB_PUT(k0, buf)                                                                   \
  LB_EACH_A(k0, put_a(ra[u], a, dtype, M, K, k_end, m, k, LB_A_DST(buf)))                 \
  LB_EACH_B(k0, put_b(rb[u], WEIGHT_ARGS, value, nested, b_flat(transposed, in_features, k, n), \
                      b_valid(transposed, N, k_end, k, n), transposed ? LB_BP : 1, LB_B_DST(buf)))

  // `value` and `nested` are written before any step decodes with them.
  barrier(CLK_LOCAL_MEM_FENCE);
  int buf = 0;
  if (k_begin < k_end) {
    LB_FETCH(k_begin)
    LB_PUT(k_begin, 0)
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  for (lb_idx k0 = k_begin; k0 < k_end; k0 += LB_BK) {
    const bool more = k0 + LB_BK < k_end;
    if (more) {
      LB_FETCH(k0 + LB_BK)
    }
    LB_MULTIPLY(buf)
    if (more) {
      // The other buffer's last readers passed the barrier that ended the previous step.
      LB_PUT(k0 + LB_BK, buf ^ 1)
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    buf ^= 1;
  }
#undef LB_FETCH
#undef LB_PUT
#else
  // One buffer, loaded and stored between two barriers: on CPU devices (PoCL)
  // the raw loads would otherwise be kept per item across a barrier.
  for (lb_idx k0 = k_begin; k0 < k_end; k0 += LB_BK) {
    // The last step's reads are done (and, the first time, `value` and `nested` written).
    barrier(CLK_LOCAL_MEM_FENCE);
    // Each group loaded and stored at once (PoCL: 10-17% faster than loading all first).
    LB_EACH_A(k0, put_a(fetch_a(a, dtype, M, K, k_end, vec_a, m, k), a, dtype, M, K, k_end, m, k,
                        LB_A_DST(0)))
    LB_EACH_B(k0, put_b(fetch_b(WEIGHT_ARGS, words, b_flat(transposed, in_features, k, n),
                                n < N && k < k_end),
                        WEIGHT_ARGS, value, nested, b_flat(transposed, in_features, k, n),
                        b_valid(transposed, N, k_end, k, n), transposed ? LB_BP : 1, LB_B_DST(0)))
    barrier(CLK_LOCAL_MEM_FENCE);
    LB_MULTIPLY(0)
  }
#endif
#undef LB_MULTIPLY
#undef LB_LOAD_FRAG
#undef LB_EACH_A
#undef LB_EACH_B
#undef LB_A_DST
#undef LB_B_DST
  // Constant indices only, so that the accumulators stay in registers.
#pragma unroll
  for (int i = 0; i < LB_TM; ++i) {
    const lb_idx m = m0 + ty * LB_TM + i;
#pragma unroll
    for (int j = 0; j < LB_TN; ++j) {
      const lb_idx n = n0 + (j / 4) * (LB_WN * 4) + tx * 4 + (j % 4);
      if (m < M && n < N) {
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
