// Sums of per-block partial sums in the CPU's order (kernels/cpu/optimizer_update.cpp,
// sum_blocks): the blocks in chunks of 256, each chunk summed in double from its first block to
// its last, then the chunks in double in order, the total written into a step slot on the
// device. Built only for devices with double precision (cl_khr_fp64); elsewhere the host adds
// the blocks' sums.
#pragma OPENCL EXTENSION cl_khr_fp64 : enable

#define LB_BLOCKS_PER_CHUNK 256

// partial: `width` floats per block (1: a gradient's sums of squares; 2: LAMB's / LARS's update
// and parameter sums). out[2c], out[2c + 1]: chunk c's sum of the first float, and of the second
// (width 2) or the number of non-finite first floats (width 1: the gradient check).
__kernel void sum_block_chunks(__global const float* partial, ulong nb, uint width,
                               __global double* out) {
  const size_t c = get_global_id(0);
  const size_t first = c * LB_BLOCKS_PER_CHUNK;
  if (first >= nb) return;
  const size_t last = min((size_t)nb, first + LB_BLOCKS_PER_CHUNK);
  double x = 0.0, y = 0.0;
  if (width == 2) {
    for (size_t b = first; b < last; ++b) {
      x += partial[2 * b];
      y += partial[2 * b + 1];
    }
  } else {
    uint bad = 0;
    for (size_t b = first; b < last; ++b) {
      const float v = partial[b];
      x += v;
      bad += isfinite(v) ? 0u : 1u;
    }
    y = bad;
  }
  out[2 * c] = x;
  out[2 * c + 1] = y;
}

// The chunks' sums (sum_block_chunks' out, `chunks` pairs) added in chunk order into a step slot
// (kernels/step_rules.h's lb_step_slot; byte offsets from the host): the double at `first_at`
// gets the first sums' total; with width 2 the double at `second_at` the second sums' total,
// with width 1 the uint there whether any block was non-finite. Nothing when `flags` (an
// lb_step_flags, whose first uint is found_inf) is given and the step is skipped.
// One work-group: its items bring the sums into local memory a tile at a time (`tile` two
// doubles per item), where the first item adds them in order, eight loads ahead of its adds.
__kernel void sums_into_slot(__global const double* sums, ulong chunks, uint width,
                             __global const uint* flags, int use_flags, __global uchar* slots,
                             ulong first_at, ulong second_at, __local double* tile) {
  if (use_flags && flags[0] != 0) return;
  const size_t lid = get_local_id(0), size = get_local_size(0);
  double x = 0.0, y = 0.0;
  for (size_t base = 0; base < chunks; base += size) {
    const size_t count = min((size_t)chunks - base, size);
    if (lid < count) {
      tile[2 * lid] = sums[2 * (base + lid)];
      tile[2 * lid + 1] = sums[2 * (base + lid) + 1];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == 0) {
      size_t c = 0;
      for (; c + 8 <= count; c += 8) {
        double v[16];
        for (int k = 0; k < 16; ++k) v[k] = tile[2 * c + k];
        for (int k = 0; k < 8; ++k) {
          x += v[2 * k];
          y += v[2 * k + 1];
        }
      }
      for (; c < count; ++c) {
        x += tile[2 * c];
        y += tile[2 * c + 1];
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid != 0) return;
  *(__global double*)(slots + first_at) = x;
  if (width == 2)
    *(__global double*)(slots + second_at) = y;
  else
    *(__global uint*)(slots + second_at) = y != 0.0 ? 1u : 0u;
}
