// The bookkeeping of an optimizer step on the device, so that a step is queued without the host
// waiting for anything (DESIGN.md, "device-side decisions"): the encoder's code table built from
// a codebook held in device memory, and the update's rejected blocks added into the optimizer's
// flags. Built for every device (no double precision needed; reduce.cl holds the sums that do).

// Midpoints strictly below r among `count` ascending ones: with ascending midpoints `r > mid[i]`
// holds on a prefix, so a binary search finds code_table.cpp's count.
inline int midpoints_below(__local const float* mid, int count, float r) {
  int lo = 0, hi = count;
  while (lo < hi) {
    const int m = (lo + hi) / 2;
    if (r > mid[m])
      lo = m + 1;
    else
      hi = m;
  }
  return lo;
}

// The table of kernels/opencl/code_table.h for `code` (256 ascending floats): the words
// build_code_table writes on the host, by one work-group of any size.
// Local: `mid` 256 floats, `steps` one uint.
__kernel void build_code_table(__global const float* code, __global uint* table,
                               __local float* mid, __local uint* steps) {
  const int lid = (int)get_local_id(0), size = (int)get_local_size(0);
  if (lid == 0) *steps = 0;
  for (int i = lid; i < 256; i += size) {
    const float c = code[i];
    const float m = i < 255 ? (c + code[i + 1]) * 0.5f : INFINITY;  // kernels::code_midpoint
    mid[i] = m;
    table[i] = as_uint(c);
    table[LB_TABLE_MID + i] = as_uint(m);
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  // Per sign and bucket of |r|, the midpoints below the bucket's lowest r, four to a word; and
  // the most midpoints one bucket spans.
  const int shift = 23 - LB_CODE_MANTISSA_BITS;
  uint most = 0;
  for (int w = lid; w < LB_TABLE_WORDS - LB_TABLE_START; w += size) {
    uint word = 0;
    for (int j = 0; j < 4; ++j) {
      const int e = 4 * w + j;
      if (e >= 2 * LB_CODE_BUCKETS) break;
      const int sign = e / LB_CODE_BUCKETS, idx = e % LB_CODE_BUCKETS;
      // Magnitude bits of the bucket's smallest and largest members.
      uint lo = 0, hi = ((uint)LB_CODE_FIRST_EXPONENT << 23) - 1u;
      if (idx > 0) {
        lo = (uint)(idx - 1 + (LB_CODE_FIRST_EXPONENT << LB_CODE_MANTISSA_BITS)) << shift;
        hi = lo + (1u << shift) - 1u;
      }
      if (idx == LB_CODE_BUCKETS - 1) hi = 0x7f800000u;
      const uint s = sign ? 0x80000000u : 0u;
      // The lowest r of a negative bucket is its largest magnitude.
      const float low = as_float((sign ? hi : lo) | s), high = as_float((sign ? lo : hi) | s);
      const int first = midpoints_below(mid, 255, low), last = midpoints_below(mid, 255, high);
      word |= (uint)first << (8 * j);
      most = max(most, (uint)(last - first));
    }
    table[LB_TABLE_START + w] = word;
  }
  atomic_max(steps, most);
  barrier(CLK_LOCAL_MEM_FENCE);
  if (lid != 0) return;
  table[LB_TABLE_STEPS] = *steps;
  // The entry of smallest magnitude, the first on a tie (kernels::zero_index).
  int zero = 0;
  for (int i = 1; i < 256; ++i)
    if (fabs(code[i]) < fabs(code[zero])) zero = i;
  table[LB_TABLE_ZERO] = (uint)zero;
}

// flags' skipped_blocks (64-bit word `skipped_word` of lb_step_flags) += the update's count of
// rejected blocks, which starts again from 0. One work-item.
__kernel void add_rejected(__global uint* rejected, __global ulong* flags, uint skipped_word) {
  flags[skipped_word] += *rejected;
  *rejected = 0;
}
