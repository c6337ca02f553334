// Sums of per-block partial sums in the CPU's order (kernels/cpu/optimizer_update.cpp,
// sum_blocks): the blocks in chunks of 256, each chunk summed in double from its first block to
// its last. Built only for devices with double precision (cl_khr_fp64); the host then reads one
// pair per chunk instead of one per block and adds the chunks in order.
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
