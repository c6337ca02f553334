// The bridge between torch tensors and kernels buffers: dtype mapping, where a
// tensor lives, the backend for a tensor's device, and a tensor's bytes as a
// buffer of a backend (wrapped in place where the backend reaches the memory:
// the CPU backend host tensors, a CUDA backend its device's tensors; copied to
// the device otherwise, as for OpenCL).
#pragma once

#include <memory>

#include <torch/types.h>

#include "kernels/backend.h"

namespace lowbit::quant {

// The kernels' dtype for a tensor dtype; throws naming `what` for others.
kernels::DType kernel_dtype(torch::ScalarType t, const char* what);
torch::ScalarType torch_dtype(kernels::DType t);

// Where a device's / a tensor's memory is (CPU or a CUDA device); throws
// naming `what` for other devices.
kernels::Location location_of(const torch::Device& d, const char* what = "tensor");
kernels::Location location_of(const torch::Tensor& t, const char* what = "tensor");
// The torch device of a location.
torch::Device device_of(const kernels::Location& where);
// The backend that runs ops on a tensor where it lives: the CPU backend for CPU
// tensors, the CUDA backend of the tensor's device for CUDA tensors (ops are
// queued on libtorch's current stream of that device).
std::shared_ptr<kernels::Backend> backend_for(const torch::Tensor& t, const char* what = "tensor");
// Throws naming `what` unless `backend` works on tensors at `at` (a CUDA
// backend needs tensors of its device; CPU and OpenCL backends, CPU tensors).
void check_reachable(const kernels::Backend& backend, const kernels::Location& at,
                     const char* what);
void check_reachable(const kernels::Backend& backend, const torch::Tensor& t, const char* what);

// A contiguous tensor's bytes as a buffer of `backend`: the tensor's own memory
// when the backend reaches it; otherwise a device buffer, filled from the
// tensor when `upload` is set, and copied back by `download()`.
class TensorBuffer {
 public:
  TensorBuffer(kernels::Backend& backend, const torch::Tensor& tensor, bool upload);
  kernels::Buffer& buffer() { return *buffer_; }
  const torch::Tensor& tensor() const { return tensor_; }
  // Copies device results into the tensor (no-op when aliased).
  void download();

 private:
  kernels::Backend& backend_;
  torch::Tensor tensor_;
  std::unique_ptr<kernels::Buffer> buffer_;
  bool aliased_;
};

}  // namespace lowbit::quant
