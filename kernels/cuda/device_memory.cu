#include "kernels/cuda/device_memory.h"

#include <algorithm>

#include "kernels/backend.h"
#include "kernels/cuda/device_util.cuh"

namespace lowbit::kernels::cuda {

DeviceMemory device_allocate(size_t bytes, cudaStream_t stream) {
  bytes = std::max<size_t>(bytes, 16);
  const CudaAllocator a = cuda_allocator();
  DeviceMemory m;
  if (a.allocate) {
    m.ptr = a.allocate(bytes, stream);
    m.release = a.release;
    LOWBIT_CHECK(m.ptr, "CUDA allocation of ", bytes, " bytes failed");
    return m;
  }
  LOWBIT_CUDA_CHECK(cudaMallocAsync(&m.ptr, bytes, stream));
  return m;
}

void device_release(const DeviceMemory& memory, cudaStream_t stream) {
  if (!memory.ptr) return;
  if (memory.release)
    memory.release(memory.ptr);
  else
    cudaFreeAsync(memory.ptr, stream);
}

}  // namespace lowbit::kernels::cuda
