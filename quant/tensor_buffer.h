// Glue between torch tensors and kernels buffers: dtype mapping and a tensor's
// bytes on a backend (aliased on the CPU backend, copied on a device).
#pragma once

#include <memory>

#include <torch/types.h>

#include "kernels/backend.h"

namespace lowbit::quant {

// The kernels' dtype for a tensor dtype; throws naming `what` for others.
kernels::DType kernel_dtype(torch::ScalarType t, const char* what);
torch::ScalarType torch_dtype(kernels::DType t);

// A contiguous CPU tensor as a buffer of `backend`. On a host-memory backend
// the buffer aliases the tensor; otherwise it is a device buffer, filled from
// the tensor when `upload` is set, and copied back by `download()`.
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
