// Helpers every OpenCL program of the library uses (a prelude, after
// shared_math.h): typed element access in the kernels::DType numbering and
// nearest-code search in a 256-entry codebook held in local memory.
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

// Number of midpoints (code[k] + code[k+1]) * 0.5 strictly below r.
inline int nearest_code(__local const float* code, float r) {
  int pos = 0;
  for (int step = 128; step > 0; step >>= 1) {
    const int k = pos + step - 1;
    pos += (r > (code[k] + code[k + 1]) * 0.5f) ? step : 0;
  }
  return pos;
}

// Entry of smallest magnitude (first on a tie), for all-zero blocks.
inline uchar zero_code_of(__local const float* code) {
  int best = 0;
  for (int k = 1; k < 256; ++k)
    if (fabs(code[k]) < fabs(code[best])) best = k;
  return (uchar)best;
}
