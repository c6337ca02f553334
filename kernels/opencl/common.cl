// Helpers every OpenCL program of the library uses (a prelude, after
// shared_math.h): typed element access in the kernels::DType numbering and
// 8-bit encoding through a code table.
#pragma OPENCL FP_CONTRACT OFF

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

// Elements [i, i + 8) of an array of `type`, i a multiple of 8, with vector
// accesses: every buffer starts on a 16-byte boundary (device allocations are
// aligned to CL_DEVICE_MEM_BASE_ADDR_ALIGN, wrapped host memory to 16 bytes).
inline void load8_elem(__global const void* p, int type, size_t i, float* v) {
  if (type == LB_F32) {
    __global const float4* q = (__global const float4*)p + i / 4;
    vstore4(q[0], 0, v);
    vstore4(q[1], 1, v);
  } else if (type == LB_F16) {
    vstore8(vload_half8(i / 8, (__global const half*)p), 0, v);
  } else {
    const uint8 w = convert_uint8(((__global const ushort8*)p)[i / 8]) << 16;
    vstore8(as_float8(w), 0, v);
  }
}

inline void store8_elem(__global void* p, int type, size_t i, const float* v) {
  if (type == LB_F32) {
    __global float4* q = (__global float4*)p + i / 4;
    q[0] = vload4(0, v);
    q[1] = vload4(1, v);
  } else if (type == LB_F16) {
    vstore_half8_rte(vload8(0, v), i / 8, (__global half*)p);
  } else {
    ushort8 w;
    w.s0 = (ushort)lb_bf16_bits(v[0]);
    w.s1 = (ushort)lb_bf16_bits(v[1]);
    w.s2 = (ushort)lb_bf16_bits(v[2]);
    w.s3 = (ushort)lb_bf16_bits(v[3]);
    w.s4 = (ushort)lb_bf16_bits(v[4]);
    w.s5 = (ushort)lb_bf16_bits(v[5]);
    w.s6 = (ushort)lb_bf16_bits(v[6]);
    w.s7 = (ushort)lb_bf16_bits(v[7]);
    ((__global ushort8*)p)[i / 8] = w;
  }
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

// Number of midpoints strictly below r (the nearest code, ties low), as the
// CPU encoder; NaN (0 * inf, from a subnormal absmax) gets code 0 as there.
// `bucketed`: the table's steps are 1 (both dynamic maps), so the bucket's
// start and one comparison decide; otherwise an 8-step binary search. No
// branch depends on r.
inline uint encode_code(__global const uint* table, float r, bool bucketed) {
  __global const float* mid = (__global const float*)(table + LB_TABLE_MID);
  int pos = 0;
  if (bucketed) {
    const uint u = as_uint(r);
    const int a = (int)((u & 0x7fffffffu) >> (23 - LB_CODE_MANTISSA_BITS)) -
                  (LB_CODE_FIRST_EXPONENT << LB_CODE_MANTISSA_BITS) + 1;
    const int bucket = (int)(u >> 31) * LB_CODE_BUCKETS + clamp(a, 0, LB_CODE_BUCKETS - 1);
    pos = (int)((table[LB_TABLE_START + bucket / 4] >> (8 * (bucket % 4))) & 0xffu);
    pos += (r > mid[pos]) ? 1 : 0;
  } else {
    for (int step = 128; step > 0; step >>= 1) pos += (r > mid[pos + step - 1]) ? step : 0;
  }
  return r != r ? 0u : (uint)pos;
}
