#include "quant/tensor_buffer.h"

namespace lowbit::quant {

kernels::DType kernel_dtype(torch::ScalarType t, const char* what) {
  switch (t) {
    case torch::kFloat32: return kernels::DType::F32;
    case torch::kFloat16: return kernels::DType::F16;
    case torch::kBFloat16: return kernels::DType::BF16;
    case torch::kUInt8: return kernels::DType::U8;
    default: break;
  }
  TORCH_CHECK(false, what, " has dtype ", t, "; expected float32, float16 or bfloat16");
}

torch::ScalarType torch_dtype(kernels::DType t) {
  switch (t) {
    case kernels::DType::F32: return torch::kFloat32;
    case kernels::DType::F16: return torch::kFloat16;
    case kernels::DType::BF16: return torch::kBFloat16;
    case kernels::DType::U8: return torch::kUInt8;
  }
  TORCH_CHECK(false, "unreachable");
}

TensorBuffer::TensorBuffer(kernels::Backend& backend, const torch::Tensor& tensor, bool upload)
    : backend_(backend), tensor_(tensor), aliased_(false) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.is_contiguous(),
              "internal: TensorBuffer needs a contiguous CPU tensor");
  const size_t bytes = size_t(tensor.numel()) * tensor.element_size();
  buffer_ = backend.wrap_host(tensor.data_ptr(), bytes);
  aliased_ = buffer_ != nullptr;
  if (!aliased_) {
    buffer_ = backend.allocate(bytes);
    if (upload) backend.write(*buffer_, tensor.data_ptr(), bytes);
  }
}

void TensorBuffer::download() {
  if (aliased_) return;
  backend_.read(*buffer_, tensor_.data_ptr(), size_t(tensor_.numel()) * tensor_.element_size());
}

}  // namespace lowbit::quant
