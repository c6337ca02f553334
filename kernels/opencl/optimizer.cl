// Fused optimizer steps: the OpenCL twin of kernels/cpu/optimizer_update.cpp,
// with the rules of optimizer_rules.h (a prelude). In the update each
// work-item keeps its elements of a block in registers between the rule and
// the requantization, so a block is read and written once; the norm pass
// (LAMB, LARS) reads in the same geometry, and the gradient statistics take
// four items per block on GPUs, one on CPU devices.

#ifdef LB_RULE
// The fused update, built once per (rule, parameter type, state kind, block
// geometry) with these macros set by the host:
//   LB_RULE, LB_PARAM_TYPE (LB_F32/F16/BF16), LB_QUANTIZED, LB_TWO_STATES;
//   LB_LANES work-items per quantization block, each updating LB_PER_ITEM
//   consecutive elements of it; LB_LOCAL_TABLES (GPUs, 8-bit states) when
//   the code tables are read from local memory.
// A work-group takes its blocks in turns (LB_FOR_EACH_BLOCK): one turn on CPU
// devices, many on GPUs, where the host launches about as many groups as run
// at once so that each group's copy of the tables serves many blocks.
// GPUs take 8 elements per item (a 256-element block is one warp), and a
// block that lies wholly inside the tensor is read and written 8 elements at
// a time with vector accesses (every buffer starts on a 16-byte boundary:
// device allocations are aligned to CL_DEVICE_MEM_BASE_ADDR_ALIGN, wrapped
// host memory to 16 bytes); the tail block element by element. CPU devices
// take a whole block per item: no barrier, and loops over the block that
// their compiler vectorises.

// Codes encode v * (1 / m), as the CPU (and bitsandbytes); an all-zero block
// (m = 0) gets `zero`, the entry of smallest magnitude.
inline uchar code_of(LB_TABLE_SPACE const uint* table, bool bucketed, uint zero, float m,
                     float inv, float v) {
  const uint c = encode_code(table, v * inv, bucketed);
  return (uchar)(m == 0.0f ? zero : c);
}

// A state's stored elements [i, i + 8) (codes or floats), and one element.
#if LB_QUANTIZED
typedef uchar lb_state_t;
#else
typedef float lb_state_t;
#endif

inline void load8_state(__global const void* s, lb_idx i, lb_state_t* v) {
#if LB_QUANTIZED
  vstore8(((__global const uchar8*)s)[i / 8], 0, v);
#else
  __global const float4* q = (__global const float4*)s + i / 4;
  vstore4(q[0], 0, v);
  vstore4(q[1], 1, v);
#endif
}

inline void store8_state(__global void* s, lb_idx i, const lb_state_t* v) {
#if LB_QUANTIZED
  ((__global uchar8*)s)[i / 8] = vload8(0, v);
#else
  __global float4* q = (__global float4*)s + i / 4;
  q[0] = vload4(0, v);
  q[1] = vload4(1, v);
#endif
}

inline float decode_state(LB_TABLE_SPACE const uint* table, float absmax, lb_state_t v) {
#if LB_QUANTIZED
  return as_float(table[v]) * absmax;
#else
  return v;
#endif
}

inline lb_state_t encode_state(LB_TABLE_SPACE const uint* table, bool bucketed, uint zero,
                               float m, float inv, float v) {
#if LB_QUANTIZED
  return code_of(table, bucketed, zero, m, inv, v);
#else
  return v;
#endif
}

// The item's elements [begin, begin + LB_PER_ITEM) of the parameter, gradient and stored
// states (`len` of them inside the tensor; zeros for an inactive item). CPU devices (one
// item per block) read a block that lies wholly inside the tensor in the rule's own loop
// instead, and come here only for the tensor's last block.
inline void load_item(__global const void* param, __global const void* grad,
                      __global const void* state1, __global const void* state2, lb_idx begin,
                      int len, bool active, bool whole, float* restrict p, float* restrict g,
                      lb_state_t* restrict q1, lb_state_t* restrict q2) {
  if (LB_LANES > 1 && whole) {
    for (int c = 0; c < LB_PER_ITEM; c += 8) {
      load8_elem(param, LB_PARAM_TYPE, begin + c, p + c);
      load8_elem(grad, LB_PARAM_TYPE, begin + c, g + c);
      load8_state(state1, begin + c, q1 + c);
      if (LB_TWO_STATES) load8_state(state2, begin + c, q2 + c);
    }
  } else {
    for (int k = 0; k < LB_PER_ITEM; ++k) {
      const lb_idx i = k < len ? begin + k : 0;  // in range; past the end not counted
      p[k] = active ? load_elem(param, LB_PARAM_TYPE, i) : 0.0f;
      g[k] = active ? load_elem(grad, LB_PARAM_TYPE, i) : 0.0f;
      q1[k] = active ? ((__global const lb_state_t*)state1)[i] : 0;
      if (LB_TWO_STATES) q2[k] = active ? ((__global const lb_state_t*)state2)[i] : 0;
    }
  }
}

// The rule for one element: its new parameter *pn and states *t1, *t2.
inline void step_one(lb_optim_args a, LB_TABLE_SPACE const uint* restrict table1, float old1,
                     LB_TABLE_SPACE const uint* restrict table2, float old2, float p, float g,
                     lb_state_t q1, lb_state_t q2, float* pn, float* t1, float* t2) {
  const float s2 = LB_TWO_STATES ? decode_state(table2, old2, q2) : 0.0f;
  const lb_optim_result r =
      lb_rule(LB_RULE, a, p, g * a.gnorm_scale, decode_state(table1, old1, q1), s2);
  *pn = lb_apply_update(a, p, r.u);
  *t1 = r.s1;
  *t2 = r.s2;
}

// The rule over the item's elements: new parameters and states.
inline void step_all(lb_optim_args a, LB_TABLE_SPACE const uint* restrict table1, float old1,
                     LB_TABLE_SPACE const uint* restrict table2, float old2,
                     const float* restrict p,
                     const float* restrict g, const lb_state_t* restrict q1,
                     const lb_state_t* restrict q2, float* restrict pn, float* restrict t1,
                     float* restrict t2) {
  for (int k = 0; k < LB_PER_ITEM; ++k)
    step_one(a, table1, old1, table2, old2, p[k], g[k], q1[k], q2[k], pn + k, t1 + k, t2 + k);
}

// Largest magnitudes as bit patterns: for non-negative floats the integer order is the float
// order, and inf / NaN lie above every finite value, so one integer max per quantity also
// finds non-finite values. `live` is all ones but the sign bit for an element inside the
// tensor, zero for one past it.
inline void track_max(uint* mp, uint* mb1, uint* mb2, float pn, float s1, float s2, uint live) {
  *mp = max(*mp, as_uint(pn) & live);
  *mb1 = max(*mb1, as_uint(s1) & live);
  *mb2 = max(*mb2, as_uint(s2) & live);
}

// The item's new states as stored: codes of v * (1 / m), or the floats.
inline void encode_all(LB_TABLE_SPACE const uint* restrict table, bool bucketed, uint zero,
                       float m, const float* restrict v, lb_state_t* restrict out) {
  const float inv = 1.0f / m;
  if (bucketed) {
    for (int k = 0; k < LB_PER_ITEM; ++k) out[k] = encode_state(table, true, zero, m, inv, v[k]);
  } else {
    for (int k = 0; k < LB_PER_ITEM; ++k) out[k] = encode_state(table, false, zero, m, inv, v[k]);
  }
}

// The step's code tables where the kernels read them (`t1`, `t2`): copied
// into local memory (LB_LOCAL_TABLES: GPUs, 8-bit states) or in place.
#if LB_LOCAL_TABLES
#define LB_STEP_TABLES                                                                    \
  copy_to_local(table1, local_tables, LB_TABLE_WORDS);                                    \
  if (LB_TWO_STATES) copy_to_local(table2, local_tables + LB_TABLE_WORDS, LB_TABLE_WORDS); \
  barrier(CLK_LOCAL_MEM_FENCE);                                                           \
  __local const uint* t1 = local_tables;                                                  \
  __local const uint* t2 = local_tables + LB_TABLE_WORDS
#else
#define LB_STEP_TABLES              \
  __global const uint* t1 = table1; \
  __global const uint* t2 = table2
#endif

// The step's arguments are the lb_optim_args at byte `args_at` of `slots`
// (the parameter's step slot), and nothing changes when the first uint of
// `flags` (lb_step_flags' found_inf) is set: the step stays on the device.
// state2 and its table may be null without LB_TWO_STATES; the tables are
// null for 32-bit states. `rejected` counts blocks left unchanged because a
// new value was not finite. Local: `maxima` two float2 per item (turns
// alternate halves, so a turn's writes never meet the last turn's reads);
// `local_tables` the tables (LB_LOCAL_TABLES; else unused).
// The item's elements go through separate simple loops (loads and rule with
// the maxima, encode, store) that a CPU device's compiler vectorises; on a GPU
// they are unrolled into registers.
__kernel void optimizer_update(__global const uchar* slots, ulong args_at,
                               __global const uint* flags, ulong n64, uint blocksize,
                               __global void* param, __global const void* grad,
                               __global void* state1, __global float* absmax1,
                               __global const uint* restrict table1, __global void* state2,
                               __global float* absmax2, __global const uint* restrict table2,
                               __global uint* rejected, __local float2* maxima,
                               __local uint* local_tables) {
  if (flags[0] != 0) return;  // the same for every item: no barrier is left half-met
  const lb_idx n = (lb_idx)n64;
  const lb_optim_args a = *(__global const lb_optim_args*)(slots + args_at);
  LB_STEP_TABLES;
  uint zero1 = 0, zero2 = 0;
  bool bucketed1 = false, bucketed2 = false;
  if (LB_QUANTIZED) {
    zero1 = t1[LB_TABLE_ZERO];
    bucketed1 = t1[LB_TABLE_STEPS] == 1;
    if (LB_TWO_STATES) {
      zero2 = t2[LB_TABLE_ZERO];
      bucketed2 = t2[LB_TABLE_STEPS] == 1;
    }
  }
  LB_FOR_EACH_BLOCK {
    LB_TURN_GEOMETRY;
    const lb_idx begin = block_begin + lane * LB_PER_ITEM;
    // Elements of this item inside the tensor.
    const int len = begin >= n ? 0 : (int)min((lb_idx)LB_PER_ITEM, n - begin);
    float old1 = 0.0f, old2 = 0.0f;
    if (active && LB_QUANTIZED) {
      old1 = absmax1[b];
      if (LB_TWO_STATES) old2 = absmax2[b];
    }
    lb_state_t q1[LB_PER_ITEM], q2[LB_PER_ITEM];
    float pn[LB_PER_ITEM], s1[LB_PER_ITEM], s2[LB_PER_ITEM];
    uint mp = 0, mb1 = 0, mb2 = 0;
#if LB_LANES == 1
    if (whole) {
      // CPU devices, a block inside the tensor: the loads, the rule and the maxima in one loop,
      // so that the rule's arithmetic overlaps the loads' waits for memory (PoCL on 2 Xeon
      // cores, 16M: 10-28% less time by optimizer than a loop of loads into arrays first;
      // docs/PERFORMANCE.md).
      __global const lb_state_t* c1 = (__global const lb_state_t*)state1 + begin;
      __global const lb_state_t* c2 =
          LB_TWO_STATES ? (__global const lb_state_t*)state2 + begin : c1;
      for (int k = 0; k < LB_PER_ITEM; ++k) {
        step_one(a, t1, old1, t2, old2, load_elem(param, LB_PARAM_TYPE, begin + k),
                 load_elem(grad, LB_PARAM_TYPE, begin + k), c1[k], LB_TWO_STATES ? c2[k] : 0,
                 pn + k, s1 + k, s2 + k);
        track_max(&mp, &mb1, &mb2, pn[k], s1[k], s2[k], 0x7fffffffu);
      }
    } else
#endif
    {
      float p[LB_PER_ITEM], g[LB_PER_ITEM];
      load_item(param, grad, state1, state2, begin, len, active, whole, p, g, q1, q2);
      step_all(a, t1, old1, t2, old2, p, g, q1, q2, pn, s1, s2);
      for (int k = 0; k < LB_PER_ITEM; ++k)
        track_max(&mp, &mb1, &mb2, pn[k], s1[k], s2[k], k < len ? 0x7fffffffu : 0u);
    }
    // A non-finite value marks the block through m1 (finite states keep it
    // finite), so one max covers both. Max is exact in any order.
    const uint inf_bits = 0x7f800000u;
#if LB_TWO_STATES
    const bool bad = mp >= inf_bits || mb1 >= inf_bits || mb2 >= inf_bits;
#else
    const bool bad = mp >= inf_bits || mb1 >= inf_bits;
#endif
    float m1 = bad ? INFINITY : as_float(mb1);
    float m2 = mb2 >= inf_bits ? INFINITY : as_float(mb2);
#if LB_WARP_MAX
    // Both are +inf or finite and non-negative: the bit patterns' max is the float max.
    m1 = as_float(lb_warp_max(as_uint(m1)));
    m2 = as_float(lb_warp_max(as_uint(m2)));
#elif LB_LANES > 1
    const uint lid = (uint)get_local_id(0);
    __local float2* mx = maxima + (turn % 2) * get_local_size(0);
    mx[lid] = (float2)(m1, m2);
    barrier(CLK_LOCAL_MEM_FENCE);
#if LB_LANES > 32
    // The block's first lane reduces for all.
    if (lane == 0) {
      for (int l = 1; l < LB_LANES; ++l) {
        const float2 v = mx[lid + l];
        m1 = fmax(m1, v.x);
        m2 = fmax(m2, v.y);
      }
      mx[lid] = (float2)(m1, m2);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float2 block_max = mx[lid - lane];
    m1 = block_max.x;
    m2 = block_max.y;
#else
    // Every lane reads the block's lanes (one barrier).
    __local const float2* lanes = mx + (lid - lane);
    for (int l = 0; l < LB_LANES; ++l) {
      const float2 v = lanes[l];
      m1 = fmax(m1, v.x);
      m2 = fmax(m2, v.y);
    }
#endif
#endif
    if (!active) continue;
    if (isinf(m1)) {
      if (lane == 0) atomic_inc(rejected);
      continue;
    }
    // One loop per state and per search, so that each vectorises.
    encode_all(t1, bucketed1, zero1, m1, s1, q1);
    if (LB_TWO_STATES) encode_all(t2, bucketed2, zero2, m2, s2, q2);
    if (whole) {
#if LB_LANES == 1
      for (int k = 0; k < LB_PER_ITEM; ++k) {
        store_elem(param, LB_PARAM_TYPE, begin + k, pn[k]);
        ((__global lb_state_t*)state1)[begin + k] = q1[k];
        if (LB_TWO_STATES) ((__global lb_state_t*)state2)[begin + k] = q2[k];
      }
#else
      for (int c = 0; c < LB_PER_ITEM; c += 8) {
        store8_elem(param, LB_PARAM_TYPE, begin + c, pn + c);
        store8_state(state1, begin + c, q1 + c);
        if (LB_TWO_STATES) store8_state(state2, begin + c, q2 + c);
      }
#endif
    } else {
      // Constant indices (k < len tested inside): an index the compiler cannot unroll would put
      // pn, q1 and q2 in memory for the whole kernel (NVIDIA: a 48-byte stack frame).
      for (int k = 0; k < LB_PER_ITEM; ++k) {
        if (k >= len) break;
        store_elem(param, LB_PARAM_TYPE, begin + k, pn[k]);
        ((__global lb_state_t*)state1)[begin + k] = q1[k];
        if (LB_TWO_STATES) ((__global lb_state_t*)state2)[begin + k] = q2[k];
      }
    }
    if (LB_QUANTIZED && lane == 0) {
      absmax1[b] = m1;
      if (LB_TWO_STATES) absmax2[b] = m2;
    }
  }
}

// One element's terms of the norm pass: u^2 into *u_sq and p^2 into *p_sq (zeros past the
// tensor's end, `live` false).
inline void add_norm_terms(lb_optim_args a, LB_TABLE_SPACE const uint* restrict table1,
                           float old1, LB_TABLE_SPACE const uint* restrict table2, float old2,
                           float p, float g, lb_state_t q1, lb_state_t q2, bool live,
                           float* u_sq, float* p_sq) {
  const float v2 = LB_TWO_STATES ? decode_state(table2, old2, q2) : 0.0f;
  const float u = lb_rule(LB_RULE, a, p, g * a.gnorm_scale, decode_state(table1, old1, q1), v2).u;
  *u_sq += live ? u * u : 0.0f;
  *p_sq += live ? p * p : 0.0f;
}

// The norm pass of LAMB / LARS in the update's geometry (same items, same loads, same tables,
// the same arguments and flags): partial[2b] = sum of u^2, partial[2b + 1] = sum of p^2 over
// block b. Writes nothing else. Local: `sums` two float2 per item (alternate turns),
// `local_tables` as the update's.
__kernel void optimizer_update_norms_fused(
    __global const uchar* slots, ulong args_at, __global const uint* flags, ulong n64,
    uint blocksize, __global const void* param, __global const void* grad,
    __global const void* state1, __global const float* absmax1,
    __global const uint* restrict table1, __global const void* state2,
    __global const float* absmax2, __global const uint* restrict table2,
    __global float* partial, __local float2* sums, __local uint* local_tables) {
  if (flags[0] != 0) return;
  const lb_idx n = (lb_idx)n64;
  const lb_optim_args a = *(__global const lb_optim_args*)(slots + args_at);
  LB_STEP_TABLES;
  LB_FOR_EACH_BLOCK {
    LB_TURN_GEOMETRY;
    const lb_idx begin = block_begin + lane * LB_PER_ITEM;
    const int len = begin >= n ? 0 : (int)min((lb_idx)LB_PER_ITEM, n - begin);
    const float old1 = active && LB_QUANTIZED ? absmax1[b] : 0.0f;
    const float old2 = active && LB_QUANTIZED && LB_TWO_STATES ? absmax2[b] : 0.0f;
    float u_sq = 0.0f, p_sq = 0.0f;
#if LB_LANES == 1
    if (whole) {
      // CPU devices, a block inside the tensor: loads and rule in one loop, as in the update.
      __global const lb_state_t* c1 = (__global const lb_state_t*)state1 + begin;
      __global const lb_state_t* c2 =
          LB_TWO_STATES ? (__global const lb_state_t*)state2 + begin : c1;
      for (int k = 0; k < LB_PER_ITEM; ++k)
        add_norm_terms(a, t1, old1, t2, old2, load_elem(param, LB_PARAM_TYPE, begin + k),
                       load_elem(grad, LB_PARAM_TYPE, begin + k), c1[k],
                       LB_TWO_STATES ? c2[k] : 0, true, &u_sq, &p_sq);
    } else
#endif
    {
      float p[LB_PER_ITEM], g[LB_PER_ITEM];
      lb_state_t q1[LB_PER_ITEM], q2[LB_PER_ITEM];
      load_item(param, grad, state1, state2, begin, len, active, whole, p, g, q1, q2);
      for (int k = 0; k < LB_PER_ITEM; ++k)
        add_norm_terms(a, t1, old1, t2, old2, p[k], g[k], q1[k], q2[k], k < len, &u_sq, &p_sq);
    }
#if LB_LANES > 1
    // The block's first lane adds the lanes in order.
    const uint lid = (uint)get_local_id(0);
    __local float2* lanes = sums + (turn % 2) * get_local_size(0);
    lanes[lid] = (float2)(u_sq, p_sq);
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lane != 0) continue;
    for (int l = 1; l < LB_LANES; ++l) {
      u_sq += lanes[lid + l].x;
      p_sq += lanes[lid + l].y;
    }
#endif
    if (!active) continue;
    partial[2 * b] = u_sq;
    partial[2 * b + 1] = p_sq;
  }
}
#endif

// partial[b] = sum of g^2 over block b in the CPU's order: sixteen lanes
// (lane k takes elements k, k + 16, ... of the block in turn), then the lanes
// in order. GPUs: four work-items per block, item t holding lanes 4t .. 4t + 3
// as one float4, so that a block's rows of sixteen are read with four 16-byte
// loads side by side, LB_SUM_ROWS rows in flight per item; a tail block
// element by element. A group holds whole blocks (its size a multiple of 4).
// Local: four floats per item.
#define LB_SUM_LANES 16
#define LB_SUM_ROWS 4
__kernel void gradient_stats(__global const void* grad, int grad_type, ulong n64, uint blocksize,
                             __global float* partial, __local float* lane_sums) {
  const lb_idx n = (lb_idx)n64;
  const lb_idx b = (lb_idx)get_global_id(0) / 4;
  const lb_idx t = (lb_idx)get_global_id(0) % 4;
  const lb_idx begin = b * blocksize;
  float4 s = (float4)(0.0f);
  if (begin + blocksize <= n) {
    for (lb_idx j = 4 * t; j < blocksize; j += LB_SUM_LANES * LB_SUM_ROWS) {
      float4 g[LB_SUM_ROWS];
      for (int r = 0; r < LB_SUM_ROWS; ++r) {
        const lb_idx row = j + (lb_idx)(LB_SUM_LANES * r);
        g[r] = row < blocksize ? load4_elem(grad, grad_type, begin + row) : (float4)(0.0f);
      }
      for (int r = 0; r < LB_SUM_ROWS; ++r) s += g[r] * g[r];  // + 0 past the block: exact
    }
  } else if (begin < n) {
    float lanes[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (lb_idx i = begin + 4 * t; i < n; i += LB_SUM_LANES)
      for (int k = 0; k < 4 && i + k < n; ++k) {
        const float g = load_elem(grad, grad_type, i + k);
        lanes[k] += g * g;
      }
    s = vload4(0, lanes);
  }
  vstore4(s, get_local_id(0), lane_sums);
  barrier(CLK_LOCAL_MEM_FENCE);
  if (t == 0 && begin < n) {
    __local const float* l = lane_sums + 4 * get_local_id(0);
    float total = 0.0f;
    for (int k = 0; k < LB_SUM_LANES; ++k) total += l[k];
    partial[b] = total;
  }
}

// gradient_stats for CPU devices: a block per work-item, its sixteen lanes
// as one float16 of running sums (lane k in component k: the same sums in the
// same order), a row of sixteen elements per step. The strided lanes of the
// kernel above, one item each, do not vectorise there.
inline float16 load16(__global const void* p, int type, size_t i) {
  if (type == LB_F32) return vload16(0, (__global const float*)p + i);
  if (type == LB_F16) return vload_half16(0, (__global const half*)p + i);
  return as_float16(convert_uint16(vload16(0, (__global const ushort*)p + i)) << 16);
}

__kernel void gradient_stats_by_block(__global const void* grad, int grad_type, ulong n,
                                      uint blocksize, __global float* partial) {
  const size_t b = get_global_id(0);
  const size_t begin = b * blocksize;
  if (begin >= n) return;
  const size_t end = min((size_t)n, begin + blocksize);
  float16 lanes = (float16)(0.0f);
  size_t i = begin;
  for (; i + LB_SUM_LANES <= end; i += LB_SUM_LANES) {
    const float16 g = load16(grad, grad_type, i);
    lanes += g * g;
  }
  float tail[LB_SUM_LANES];
  vstore16(lanes, 0, tail);
  for (int l = 0; l < LB_SUM_LANES; ++l) {  // constant indices: tail stays in registers
    if (i + l >= end) break;
    const float g = load_elem(grad, grad_type, i + l);
    tail[l] += g * g;
  }
  float total = 0.0f;
  for (int l = 0; l < LB_SUM_LANES; ++l) total += tail[l];
  partial[b] = total;
}
