// The int8 matmul of LLM.int8() (Backend::gemm_int8 in kernels/backend.h):
// the OpenCL twin of kernels/cpu/gemm_int8.cpp. Rows of x are quantized to
// int8 by their absmax, the codes multiply W's with int32 sums (exact, so the
// order of summation cannot change a bit) and the float epilogue rounds as
// the CPU does: float(acc) * row_factor * scale (+ bias), no contraction.
#pragma OPENCL FP_CONTRACT OFF

// 1 / 127^2 (kernels::kInt8Dequant).
#define INT8_DEQUANT (1.0f / 16129.0f)

// One work-group (power-of-two size) per row of x: absmax by a local
// reduction, then codes = round-half-even(x * (127 / absmax)) (rint: the
// CPU's nearbyint). A row holding inf or NaN gets codes 0 and row_factor NaN;
// a row of zeros codes 0 and row_factor 0.
__kernel void quantize_rows_int8(__global const float* x, ulong k, __global char* codes,
                                 __global float* row_factor, __local float* max_scratch,
                                 __local int* bad_scratch) {
  const size_t row = get_group_id(0);
  const size_t lid = get_local_id(0);
  const size_t lsize = get_local_size(0);
  __global const float* xr = x + row * k;
  __global char* c = codes + row * k;
  float a = 0.0f;
  int bad = 0;
  for (size_t j = lid; j < k; j += lsize) {
    const float v = xr[j];
    bad |= !isfinite(v);
    a = fmax(a, fabs(v));
  }
  max_scratch[lid] = a;
  bad_scratch[lid] = bad;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (size_t s = lsize / 2; s > 0; s /= 2) {
    if (lid < s) {
      max_scratch[lid] = fmax(max_scratch[lid], max_scratch[lid + s]);
      bad_scratch[lid] |= bad_scratch[lid + s];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  a = max_scratch[0];
  bad = bad_scratch[0];
  const float inv = (a > 0.0f && !bad) ? 127.0f / a : 0.0f;
  for (size_t j = lid; j < k; j += lsize) c[j] = bad ? (char)0 : (char)(int)rint(xr[j] * inv);
  if (lid == 0) row_factor[row] = bad ? NAN : a * INT8_DEQUANT;
}

// TILE x TILE work-items per group, item (lx, ly) computing y[r0 + ly, o0 + lx];
// the group stages KT columns of its TILE rows of x codes and TILE rows of W
// codes in local memory per step, each item loading four bytes of each.
#define KT (4 * TILE)
__kernel void gemm_int8(__global const char* xq, __global const float* row_factor, ulong m,
                        __global const char* wq, __global const float* scale, ulong n, ulong k,
                        __global const float* bias, int has_bias, __global float* y) {
  __local char xs[TILE][KT];
  __local char ws[TILE][KT];
  const size_t lx = get_local_id(0), ly = get_local_id(1);
  const size_t o = get_group_id(0) * TILE + lx;
  const size_t r = get_group_id(1) * TILE + ly;
  const size_t w_row = get_group_id(0) * TILE + ly;  // the W row this item stages
  int acc = 0;
  for (size_t k0 = 0; k0 < k; k0 += KT) {
    for (int j = 0; j < 4; ++j) {
      const size_t col = k0 + lx * 4 + j;
      xs[ly][lx * 4 + j] = (r < m && col < k) ? xq[r * k + col] : (char)0;
      ws[ly][lx * 4 + j] = (w_row < n && col < k) ? wq[w_row * k + col] : (char)0;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int j = 0; j < KT; ++j) acc += (int)xs[ly][j] * (int)ws[lx][j];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (r < m && o < n) {
    float v = convert_float_rte(acc) * row_factor[r];
    v = v * scale[o];
    if (has_bias) v = v + bias[o];
    y[r * n + o] = v;
  }
}
