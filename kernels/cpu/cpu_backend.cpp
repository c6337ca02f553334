#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/cpu/cpu_kernels.h"

namespace lowbit::kernels::cpu {
namespace {

template <typename T>
T* as(const Buffer& b) {
  return static_cast<T*>(CpuBackend::host(b));
}

void check_range(const Buffer& b, size_t bytes, size_t offset, const char* op) {
  LOWBIT_CHECK(offset <= b.bytes() && bytes <= b.bytes() - offset, op, ": range [", offset, ", ",
               offset + bytes, ") is outside a buffer of ", b.bytes(), " bytes");
}

}  // namespace

CpuBuffer::CpuBuffer(const Backend* owner, size_t bytes)
    : Buffer(owner, bytes), data_(nullptr), owned_(true) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  data_ = std::aligned_alloc(64, rounded);
  if (data_ == nullptr) throw std::bad_alloc();
}

CpuBuffer::CpuBuffer(const Backend* owner, void* data, size_t bytes)
    : Buffer(owner, bytes), data_(data), owned_(false) {}

CpuBuffer::~CpuBuffer() {
  if (owned_) std::free(data_);
}

std::unique_ptr<Buffer> CpuBackend::allocate(size_t bytes) {
  return std::make_unique<CpuBuffer>(this, bytes);
}

std::unique_ptr<Buffer> CpuBackend::wrap_host(void* data, size_t bytes) {
  return std::make_unique<CpuBuffer>(this, data, bytes);
}

void CpuBackend::write(Buffer& dst, const void* src, size_t bytes, size_t offset) {
  check_buffer(dst, 0, "write", "dst");
  check_range(dst, bytes, offset, "write");
  if (bytes) std::memcpy(as<uint8_t>(dst) + offset, src, bytes);
}

void CpuBackend::read(const Buffer& src, void* dst, size_t bytes, size_t offset) {
  check_buffer(src, 0, "read", "src");
  check_range(src, bytes, offset, "read");
  if (bytes) std::memcpy(dst, as<uint8_t>(src) + offset, bytes);
}

void CpuBackend::do_copy(const Buffer& src, Buffer& dst, size_t bytes) {
  cpu::copy(as<uint8_t>(src), as<uint8_t>(dst), bytes);
}

void CpuBackend::do_quantize_blockwise(const Buffer& x, DType x_type, size_t n, int blocksize,
                                       const Buffer& code, Buffer& absmax, Buffer& codes,
                                       const StochasticRounding& rounding) {
  cpu::quantize_blockwise(as<void>(x), x_type, n, blocksize, as<float>(code), as<float>(absmax),
                          as<uint8_t>(codes), rounding);
}

void CpuBackend::do_dequantize_blockwise(const Buffer& codes, const Buffer& absmax,
                                         const Buffer& code, size_t n, int blocksize, Buffer& out,
                                         DType out_type, float offset) {
  cpu::dequantize_blockwise(as<uint8_t>(codes), as<float>(absmax), as<float>(code), n, blocksize,
                            as<void>(out), out_type, offset);
}

void CpuBackend::do_quantize_4bit(const Buffer& x, DType x_type, size_t n, int blocksize,
                                  Format4 format, Buffer& absmax, Buffer& packed) {
  cpu::quantize_4bit(as<void>(x), x_type, n, blocksize, format, as<float>(absmax),
                     as<uint8_t>(packed));
}

void CpuBackend::do_dequantize_4bit(const Buffer& packed, const Buffer& absmax, size_t n,
                                    int blocksize, Format4 format, Buffer& out, DType out_type) {
  cpu::dequantize_4bit(as<uint8_t>(packed), as<float>(absmax), n, blocksize, format, as<void>(out),
                       out_type);
}

size_t CpuBackend::do_optimizer_update(const OptimizerOperands& op, const OptimizerArgs& args) {
  return cpu::optimizer_update(op, args);
}

UpdateNorms CpuBackend::do_optimizer_update_norms(const OptimizerOperands& op,
                                                  const OptimizerArgs& args) {
  return cpu::optimizer_update_norms(op, args);
}

GradientStats CpuBackend::do_gradient_stats(const Buffer& grad, DType grad_type, size_t n,
                                            int blocksize) {
  return cpu::gradient_stats(as<void>(grad), grad_type, n, blocksize);
}

}  // namespace lowbit::kernels::cpu
