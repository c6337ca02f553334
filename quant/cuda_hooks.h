// Builds with CUDA: connects the kernels' CUDA backend to libtorch. Its ops are
// queued on libtorch's current stream of each device
// (kernels::set_cuda_stream_provider), so they order with the user's own CUDA
// work, and its device memory comes from libtorch's caching allocator
// (kernels::set_cuda_allocator). Idempotent and cheap; location_of() calls it
// whenever it meets a CUDA device.
#pragma once

namespace lowbit::quant {

void install_cuda_hooks();

}  // namespace lowbit::quant
