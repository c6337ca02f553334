#include "quant/cuda_hooks.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/backend.h"

namespace lowbit::quant {
namespace {

void* current_stream(int device) {
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
}

// On the current device (the backend makes its device current first).
void* allocate(size_t bytes, void* stream) {
  return c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(bytes,
                                                                static_cast<cudaStream_t>(stream));
}

void release(void* ptr) { c10::cuda::CUDACachingAllocator::raw_delete(ptr); }

}  // namespace

void install_cuda_hooks() {
  static const bool installed = [] {
    kernels::set_cuda_stream_provider(&current_stream);
    kernels::set_cuda_allocator({&allocate, &release});
    return true;
  }();
  (void)installed;
}

}  // namespace lowbit::quant
