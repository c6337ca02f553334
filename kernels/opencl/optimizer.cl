// Fused optimizer steps: the OpenCL twin of kernels/cpu/optimizer_update.cpp,
// with the rules of optimizer_rules.h (a prelude). One work-group per block;
// each work-item keeps its elements of the block in registers between the
// rule and the requantization, so a block is read and written once.

// Elements of a block per work-item; the host picks the group size to fit.
#define LB_MAX_PER_ITEM 16

// Reductions over the work-group (size: a power of two); every item gets the
// result. The tree order is fixed, so results are deterministic per device.
inline float group_max(float v, __local float* scratch) {
  const size_t lid = get_local_id(0);
  scratch[lid] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (size_t s = get_local_size(0) / 2; s > 0; s /= 2) {
    if (lid < s) scratch[lid] = fmax(scratch[lid], scratch[lid + s]);
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  v = scratch[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  return v;
}

inline float group_sum(float v, __local float* scratch) {
  const size_t lid = get_local_id(0);
  scratch[lid] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (size_t s = get_local_size(0) / 2; s > 0; s /= 2) {
    if (lid < s) scratch[lid] = scratch[lid] + scratch[lid + s];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  v = scratch[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  return v;
}

inline float load_state(__global const void* state, int quantized, __local const float* qmap,
                        float absmax, size_t i) {
  if (quantized) return qmap[((__global const uchar*)state)[i]] * absmax;
  return ((__global const float*)state)[i];
}

// Codes encode v * (1 / absmax), as the CPU twin (and bitsandbytes); an
// all-zero block (absmax 0) gets `zero`, the map's code of smallest magnitude.
inline void store_state(__global void* state, int quantized, __local const float* qmap,
                        float absmax, uchar zero, size_t i, float v) {
  if (!quantized)
    ((__global float*)state)[i] = v;
  else if (absmax == 0.0f)
    ((__global uchar*)state)[i] = zero;
  else
    ((__global uchar*)state)[i] = (uchar)nearest_code(qmap, v * (1.0f / absmax));
}

// Both qmaps into local memory (lq[0..255] state1, lq[256..511] state2).
inline void load_qmaps(int quantized, int two_states, __global const float* qmap1,
                       __global const float* qmap2, __local float* lq) {
  if (!quantized) return;
  for (size_t i = get_local_id(0); i < 256; i += get_local_size(0)) {
    lq[i] = qmap1[i];
    if (two_states) lq[256 + i] = qmap2[i];
  }
  barrier(CLK_LOCAL_MEM_FENCE);
}

// The rule for element i: old states from the buffers, new ones returned.
inline lb_optim_result step_element(int rule, lb_optim_args a, __global const void* param,
                                    int param_type, __global const void* grad, int quantized,
                                    int two_states, __global const void* state1,
                                    __global const void* state2, __local const float* lq,
                                    float absmax1, float absmax2, size_t i, float* p) {
  *p = load_elem(param, param_type, i);
  const float g = load_elem(grad, param_type, i) * a.gnorm_scale;
  const float s1 = load_state(state1, quantized, lq, absmax1, i);
  const float s2 = two_states ? load_state(state2, quantized, lq + 256, absmax2, i) : 0.0f;
  return lb_rule(rule, a, *p, g, s1, s2);
}

// state2 may be null (two_states = 0); `rejected` counts blocks left unchanged
// because a new value was not finite. Local: scratch[group size], lq[512].
__kernel void optimizer_update(int rule, lb_optim_args a, ulong n, uint blocksize, int quantized,
                               int two_states, __global void* param, int param_type,
                               __global const void* grad, __global void* state1,
                               __global float* absmax1, __global const float* qmap1,
                               __global void* state2, __global float* absmax2,
                               __global const float* qmap2, __global uint* rejected,
                               __local float* scratch, __local float* lq) {
  const size_t b = get_group_id(0);
  const size_t lsize = get_local_size(0);
  const size_t begin = b * blocksize;
  const size_t end = min((size_t)n, begin + blocksize);
  load_qmaps(quantized, two_states, qmap1, qmap2, lq);
  const float old1 = quantized ? absmax1[b] : 0.0f;
  const float old2 = (quantized && two_states) ? absmax2[b] : 0.0f;
  float pn[LB_MAX_PER_ITEM], t1[LB_MAX_PER_ITEM], t2[LB_MAX_PER_ITEM];
  float m1 = 0.0f, m2 = 0.0f, bad = 0.0f;
  int k = 0;
  for (size_t i = begin + get_local_id(0); i < end; i += lsize, ++k) {
    float p;
    const lb_optim_result r = step_element(rule, a, param, param_type, grad, quantized, two_states,
                                           state1, state2, lq, old1, old2, i, &p);
    pn[k] = lb_apply_update(a, p, r.u);
    t1[k] = r.s1;
    t2[k] = r.s2;
    if (!isfinite(pn[k]) || !isfinite(r.s1) || (two_states && !isfinite(r.s2))) bad = 1.0f;
    m1 = fmax(m1, fabs(r.s1));
    m2 = fmax(m2, fabs(r.s2));
  }
  // Every item reaches every barrier: no early return (PoCL, like the
  // standard, needs barriers in uniform control flow it can see).
  bad = group_max(bad, scratch);
  m1 = group_max(m1, scratch);
  m2 = group_max(m2, scratch);
  if (bad != 0.0f) {
    if (get_local_id(0) == 0) atomic_inc(rejected);
  } else {
    // The zero codes are searched once per item, and only for all-zero blocks.
    const uchar zero1 = (quantized && m1 == 0.0f) ? zero_code_of(lq) : 0;
    const uchar zero2 = (quantized && two_states && m2 == 0.0f) ? zero_code_of(lq + 256) : 0;
    k = 0;
    for (size_t i = begin + get_local_id(0); i < end; i += lsize, ++k) {
      store_elem(param, param_type, i, pn[k]);
      store_state(state1, quantized, lq, m1, zero1, i, t1[k]);
      if (two_states) store_state(state2, quantized, lq + 256, m2, zero2, i, t2[k]);
    }
    if (quantized && get_local_id(0) == 0) {
      absmax1[b] = m1;
      if (two_states) absmax2[b] = m2;
    }
  }
}

// partial[2b] = sum of u^2, partial[2b + 1] = sum of p^2 over block b.
__kernel void optimizer_update_norms(int rule, lb_optim_args a, ulong n, uint blocksize,
                                     int quantized, int two_states, __global const void* param,
                                     int param_type, __global const void* grad,
                                     __global const void* state1, __global const float* absmax1,
                                     __global const float* qmap1, __global const void* state2,
                                     __global const float* absmax2, __global const float* qmap2,
                                     __global float* partial, __local float* scratch,
                                     __local float* lq) {
  const size_t b = get_group_id(0);
  const size_t begin = b * blocksize;
  const size_t end = min((size_t)n, begin + blocksize);
  load_qmaps(quantized, two_states, qmap1, qmap2, lq);
  const float old1 = quantized ? absmax1[b] : 0.0f;
  const float old2 = (quantized && two_states) ? absmax2[b] : 0.0f;
  float u_sq = 0.0f, p_sq = 0.0f;
  for (size_t i = begin + get_local_id(0); i < end; i += get_local_size(0)) {
    float p;
    const float u = step_element(rule, a, param, param_type, grad, quantized, two_states, state1,
                                 state2, lq, old1, old2, i, &p).u;
    u_sq += u * u;
    p_sq += p * p;
  }
  u_sq = group_sum(u_sq, scratch);
  p_sq = group_sum(p_sq, scratch);
  if (get_local_id(0) == 0) {
    partial[2 * b] = u_sq;
    partial[2 * b + 1] = p_sq;
  }
}

// partial[b] = sum of g^2 over block b.
__kernel void gradient_stats(__global const void* grad, int grad_type, ulong n, uint blocksize,
                             __global float* partial, __local float* scratch) {
  const size_t b = get_group_id(0);
  const size_t begin = b * blocksize;
  const size_t end = min((size_t)n, begin + blocksize);
  float s = 0.0f;
  for (size_t i = begin + get_local_id(0); i < end; i += get_local_size(0)) {
    const float g = load_elem(grad, grad_type, i);
    s += g * g;
  }
  s = group_sum(s, scratch);
  if (get_local_id(0) == 0) partial[b] = s;
}
