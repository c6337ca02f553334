#include "quant/tensor_buffer.h"

#ifdef LOWBIT_WITH_CUDA
#include "quant/cuda_hooks.h"
#endif

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

kernels::Location location_of(const torch::Tensor& t, const char* what) {
  return location_of(t.device(), what);
}

kernels::Location location_of(const torch::Device& d, const char* what) {
  if (d.is_cpu()) return kernels::Location::host();
  TORCH_CHECK(d.is_cuda(), what, " is on ", d, "; lowbit works on CPU and CUDA tensors");
#ifdef LOWBIT_WITH_CUDA
  install_cuda_hooks();
#endif
  return kernels::Location::cuda(d.has_index() ? d.index() : 0);
}

torch::Device device_of(const kernels::Location& where) {
  if (where.is_host()) return torch::kCPU;
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(where.index));
}

std::shared_ptr<kernels::Backend> backend_for(const torch::Tensor& t, const char* what) {
  return kernels::backend_for(location_of(t, what));
}

void check_reachable(const kernels::Backend& backend, const torch::Tensor& t, const char* what) {
  check_reachable(backend, location_of(t, what), what);
}

void check_reachable(const kernels::Backend& backend, const kernels::Location& at,
                     const char* what) {
  const bool cuda_backend = backend.kind() == kernels::BackendKind::CUDA;
  TORCH_CHECK(at.is_host() != cuda_backend &&
                  (at.is_host() || backend.name() == kernels::location_name(at)),
              what, " is on ", kernels::location_name(at), " but the kernels run on ",
              backend.name(), "; keep every tensor of an operation on one device (",
              cuda_backend ? "this backend works on its own CUDA device's tensors"
                           : "this backend works on CPU tensors",
              ")");
}

TensorBuffer::TensorBuffer(kernels::Backend& backend, const torch::Tensor& tensor, bool upload)
    : backend_(backend), tensor_(tensor), aliased_(false) {
  TORCH_CHECK(tensor.is_contiguous(), "internal: TensorBuffer needs a contiguous tensor");
  check_reachable(backend, tensor, "a tensor");
  const size_t bytes = size_t(tensor.numel()) * tensor.element_size();
  buffer_ = backend.wrap(tensor.data_ptr(), bytes, location_of(tensor));
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
