// Device memory of the CUDA backend, on the current device and in stream order
// (no host synchronisation): through the allocator the torch layer installs
// (kernels::set_cuda_allocator: libtorch's caching allocator), or
// cudaMallocAsync. Internal to kernels/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace lowbit::kernels::cuda {

// An allocation and the release that matches how it was made (the allocator
// may be installed after some memory was taken).
struct DeviceMemory {
  void* ptr = nullptr;
  void (*release)(void*) = nullptr;  // null: cudaFreeAsync
};

DeviceMemory device_allocate(size_t bytes, cudaStream_t stream);
// Never throws (destructors call it); the memory may be reused by work queued
// on `stream` afterwards.
void device_release(const DeviceMemory& memory, cudaStream_t stream);

// Memory for the kernels of one op, released after them in stream order.
class DeviceScratch {
 public:
  DeviceScratch(size_t bytes, cudaStream_t stream)
      : memory_(device_allocate(bytes, stream)), stream_(stream) {}
  ~DeviceScratch() { device_release(memory_, stream_); }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(memory_.ptr);
  }

 private:
  DeviceMemory memory_;
  cudaStream_t stream_;
};

}  // namespace lowbit::kernels::cuda
