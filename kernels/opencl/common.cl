// Helpers every OpenCL program of the library uses (a prelude, after
// shared_math.h): typed element access in the kernels::DType numbering and
// 8-bit encoding through a code table.
#pragma OPENCL FP_CONTRACT OFF

// Index arithmetic in 32 bits where the host found every index of the call below 2^31
// (LB_IDX32): 64-bit integer operations take several instructions each on GPUs (on the H100
// the 4-bit matmul took 29-31% less time at batch 64, the quantizers 4-7% less). Addresses
// stay 64-bit either way.
#if LB_IDX32
typedef uint lb_idx;
#else
typedef size_t lb_idx;
#endif

// Element types, numbered as kernels::DType.
#define LB_F32 0
#define LB_F16 1
#define LB_BF16 2

inline float load_elem(__global const void* p, int type, size_t i) {
  if (type == LB_F32) return ((__global const float*)p)[i];
  if (type == LB_F16) return vload_half(i, (__global const half*)p);
  return as_float(((uint)((__global const ushort*)p)[i]) << 16);
}

inline void store_elem(__global void* p, int type, size_t i, float v) {
  if (type == LB_F32)
    ((__global float*)p)[i] = v;
  else if (type == LB_F16)
    vstore_half_rte(v, i, (__global half*)p);
  else
    ((__global ushort*)p)[i] = (ushort)lb_bf16_bits(v);
}

// Elements [i, i + 4) of an array of `type`, i a multiple of 4, with one
// vector access: every buffer starts on a 16-byte boundary (device
// allocations are aligned to CL_DEVICE_MEM_BASE_ADDR_ALIGN, wrapped host
// memory to 16 bytes).
inline float4 load4_elem(__global const void* p, int type, size_t i) {
  if (type == LB_F32) return ((__global const float4*)p)[i / 4];
  if (type == LB_F16) return vload_half4(i / 4, (__global const half*)p);
  return as_float4(convert_uint4(((__global const ushort4*)p)[i / 4]) << 16);
}

inline void store4_elem(__global void* p, int type, size_t i, float4 v) {
  if (type == LB_F32) {
    ((__global float4*)p)[i / 4] = v;
  } else if (type == LB_F16) {
    vstore_half4_rte(v, i / 4, (__global half*)p);
  } else {
    const ushort4 w = (ushort4)((ushort)lb_bf16_bits(v.x), (ushort)lb_bf16_bits(v.y),
                                (ushort)lb_bf16_bits(v.z), (ushort)lb_bf16_bits(v.w));
    ((__global ushort4*)p)[i / 4] = w;
  }
}

// Elements [i, i + 8), i a multiple of 8, into or from v[0 .. 8).
inline void load8_elem(__global const void* p, int type, size_t i, float* v) {
  vstore4(load4_elem(p, type, i), 0, v);
  vstore4(load4_elem(p, type, i + 4), 1, v);
}

inline void store8_elem(__global void* p, int type, size_t i, const float* v) {
  store4_elem(p, type, i, vload4(0, v));
  store4_elem(p, type, i + 4, vload4(1, v));
}

// Offsets in a code table (kernels/opencl/code_table.h), in 32-bit words. The
// optimizer update and the blockwise quantizer encode with it.
#define LB_TABLE_MID 256
#define LB_TABLE_STEPS 512
#define LB_TABLE_ZERO 513
#define LB_TABLE_START 514
#define LB_CODE_MANTISSA_BITS 7
#define LB_CODE_FIRST_EXPONENT 96
#define LB_CODE_BUCKETS (1 + 32 * (1 << LB_CODE_MANTISSA_BITS))

#define LB_TABLE_WORDS (LB_TABLE_START + (2 * LB_CODE_BUCKETS + 3) / 4)

// The address space the encoder reads code tables from, and how it reads their
// packed bytes: __local where a program copies them there (LB_LOCAL_TABLES, set
// by the host for GPUs), else __global.
#if LB_LOCAL_TABLES
#define LB_TABLE_SPACE __local
#define lb_table_byte lb_local_byte
#else
#define LB_TABLE_SPACE __global
#define lb_table_byte lb_word_byte
#endif

// Byte i of the bytes packed four to a word from `words` (byte k of word w in its bits 8k to
// 8k + 7). In local memory (GPUs) on a little-endian device (all known ones) that is the byte
// at address 4w + k: one byte load instead of a word load, shift and mask (on the H100 the
// quantizers, bound by instructions, took 8% and 13% less time; the updates the same). CPU
// devices keep the word form, whose gathers PoCL vectorises better (AdamW8bit's update at 16M
// on 2 Xeon cores: 34-37 ms, against 38-45 with bytes).
#define lb_word_byte(words, i) (((words)[(i) / 4] >> (8 * ((i) % 4))) & 0xffu)
#ifdef __ENDIAN_LITTLE__
#define lb_local_byte(words, i) ((uint)((__local const uchar*)(words))[i])
#else
#define lb_local_byte(words, i) lb_word_byte(words, i)
#endif

// Number of midpoints strictly below r (the nearest code, ties low), as the
// CPU encoder; NaN (0 * inf, from a subnormal absmax) gets code 0 as there.
// `bucketed`: the table's steps are 1 (both dynamic maps), so the bucket's
// start and one comparison decide; otherwise an 8-step binary search. No
// branch depends on r.
inline uint encode_code(LB_TABLE_SPACE const uint* table, float r, bool bucketed) {
  LB_TABLE_SPACE const float* mid = (LB_TABLE_SPACE const float*)(table + LB_TABLE_MID);
  int pos = 0;
  if (bucketed) {
    const uint u = as_uint(r);
    const int a = (int)((u & 0x7fffffffu) >> (23 - LB_CODE_MANTISSA_BITS)) -
                  (LB_CODE_FIRST_EXPONENT << LB_CODE_MANTISSA_BITS) + 1;
    const uint bucket = (u >> 31) * LB_CODE_BUCKETS + (uint)clamp(a, 0, LB_CODE_BUCKETS - 1);
    pos = (int)lb_table_byte(table + LB_TABLE_START, bucket);
    pos += (r > mid[pos]) ? 1 : 0;
  } else {
    for (int step = 128; step > 0; step >>= 1) pos += (r > mid[pos + step - 1]) ? step : 0;
  }
  return r != r ? 0u : (uint)pos;
}

#ifdef LB_LANES
#if LB_WARP_MAX
// The largest of a block's LB_LANES values (a power of two up to 32), on NVIDIA devices, where a
// block's items are consecutive lanes of one warp: PTX butterfly shuffles, so that a block needs
// neither local memory nor a barrier and the warps of a group do not wait for each other. Every
// lane of the warp must call it. Set by the host (LB_WARP_MAX) for NVIDIA's compiler only.
inline uint lb_warp_max(uint v) {
  for (uint d = LB_LANES / 2; d > 0; d >>= 1) {
    uint other;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;"
                 : "=r"(other)
                 : "r"(v), "r"(d));
    v = max(v, other);
  }
  return v;
}
#endif

// A work-item's place in a block layout (LB_LANES items per quantization
// block, set by the host; the optimizer update and the quantizers): its
// block b and lane, the block's first element, whether the block starts
// inside the tensor (active) and lies wholly inside it (whole). Uses the
// kernel's `n` and `blocksize`.
#define LB_ITEM_GEOMETRY                                   \
  const lb_idx b = (lb_idx)get_global_id(0) / LB_LANES;    \
  const lb_idx lane = (lb_idx)get_global_id(0) % LB_LANES; \
  const lb_idx block_begin = b * blocksize;                \
  const bool active = block_begin < n;                     \
  const bool whole = block_begin + blocksize <= n

// The blocks a persistent group walks: get_local_size(0) / LB_LANES at a
// time, all groups' blocks apart. Every item of a group takes the same turns
// (the bound depends on the group alone), so barriers inside stay uniform;
// `turn` counts them. Uses the kernel's `n` and `blocksize`.
#define LB_FOR_EACH_BLOCK                                                                   \
  const lb_idx lane = (lb_idx)get_local_id(0) % LB_LANES;                                   \
  const lb_idx per_group = (lb_idx)get_local_size(0) / LB_LANES;                            \
  const lb_idx nb = (n + blocksize - 1) / blocksize;                                        \
  lb_idx turn = 0;                                                                          \
  for (lb_idx first = (lb_idx)get_group_id(0) * per_group; first < nb;                      \
       first += (lb_idx)get_num_groups(0) * per_group, ++turn)

// Per turn: block b, its first element, whether it starts inside the tensor
// (active) and lies wholly inside it (whole).
#define LB_TURN_GEOMETRY                                       \
  const lb_idx b = first + (lb_idx)get_local_id(0) / LB_LANES; \
  const lb_idx block_begin = b * blocksize;                    \
  const bool active = b < nb;                                  \
  const bool whole = block_begin + blocksize <= n
#endif

// A table of `words` uints copied into local memory by the whole group (a
// barrier must follow before it is read): table lookups are gathers, which
// local memory serves in one pass where global memory takes one per cache
// line touched. For the 8-bit code tables (LB_LOCAL_TABLES) the host then
// launches about as many groups as run at once, each walking many blocks, so
// that one copy serves many blocks.
inline void copy_to_local(__global const uint* from, __local uint* to, size_t words) {
  for (size_t w = get_local_id(0); w < words; w += get_local_size(0)) to[w] = from[w];
}
