#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/cpu/isa_kernels.h"

namespace lowbit::kernels::cpu {
namespace {

template <typename T>
T* as(const Buffer& b) {
  return static_cast<T*>(CpuBackend::host(b));
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

std::unique_ptr<Buffer> CpuBackend::wrap(void* data, size_t bytes, Location where) {
  if (!where.is_host()) return nullptr;
  return std::make_unique<CpuBuffer>(this, data, bytes);
}

void CpuBackend::write(Buffer& dst, const void* src, size_t bytes, size_t offset) {
  check_range(dst, bytes, offset, "write", "dst");
  if (bytes) std::memcpy(as<uint8_t>(dst) + offset, src, bytes);
}

void CpuBackend::read(const Buffer& src, void* dst, size_t bytes, size_t offset) {
  check_range(src, bytes, offset, "read", "src");
  if (bytes) std::memcpy(dst, as<uint8_t>(src) + offset, bytes);
}

void CpuBackend::do_copy(const Buffer& src, Buffer& dst, size_t bytes) {
  cpu::copy(as<uint8_t>(src), as<uint8_t>(dst), bytes);
}

void CpuBackend::do_quantize_blockwise(const Buffer& x, DType x_type, size_t n, int blocksize,
                                       const Buffer& code, Buffer& absmax, Buffer& codes,
                                       const StochasticRounding& rounding) {
  active_kernels().quantize_blockwise(as<void>(x), x_type, n, blocksize, as<float>(code),
                                      as<float>(absmax), as<uint8_t>(codes), rounding);
}

void CpuBackend::do_dequantize_blockwise(const Buffer& codes, const Buffer& absmax,
                                         const Buffer& code, size_t n, int blocksize, Buffer& out,
                                         DType out_type, float offset) {
  active_kernels().dequantize_blockwise(as<uint8_t>(codes), as<float>(absmax), as<float>(code), n,
                                        blocksize, as<void>(out), out_type, offset);
}

void CpuBackend::do_quantize_4bit(const Buffer& x, DType x_type, size_t n, int blocksize,
                                  Format4 format, Buffer& absmax, Buffer& packed) {
  active_kernels().quantize_4bit(as<void>(x), x_type, n, blocksize, format, as<float>(absmax),
                                 as<uint8_t>(packed));
}

void CpuBackend::do_dequantize_4bit(const Buffer& packed, const Buffer& absmax, size_t n,
                                    int blocksize, Format4 format, Buffer& out, DType out_type) {
  active_kernels().dequantize_4bit(as<uint8_t>(packed), as<float>(absmax), n, blocksize, format,
                                   as<void>(out), out_type);
}

// ---- 4-bit matmul ----

namespace {

Weight4bitView view_of(const Weight4bit& w) {
  Weight4bitView v{};
  v.packed = as<uint8_t>(*w.packed);
  if (w.double_quant()) {
    v.absmax_codes = as<uint8_t>(*w.absmax);
    v.nested_absmax = as<float>(*w.nested_absmax);
    v.nested_code = as<float>(*w.nested_code);
    v.nested_shift = log2_exact(size_t(w.nested_blocksize));
    v.offset = w.offset;
  } else {
    v.absmax = as<float>(*w.absmax);
  }
  v.out_features = w.out_features;
  v.in_features = w.in_features;
  v.block_shift = log2_exact(size_t(w.blocksize));
  v.value = format4_table(w.format).value.data();
  return v;
}

const void* host_or_null(const Buffer* b) { return b ? CpuBackend::host(*b) : nullptr; }

}  // namespace

void CpuBackend::do_gemm_4bit(const Buffer& x, size_t m, const Weight4bit& w, const Buffer* bias,
                              Buffer& y, DType dtype) {
  active_kernels().gemm_4bit(as<void>(x), m, view_of(w), host_or_null(bias), as<void>(y), dtype);
}

void CpuBackend::do_gemv_4bit(const Buffer& x, const Weight4bit& w, const Buffer* bias, Buffer& y,
                              DType dtype) {
  active_kernels().gemv_4bit(as<void>(x), view_of(w), host_or_null(bias), as<void>(y), dtype);
}

void CpuBackend::do_gemv_4bit_int8(const Buffer& x, const Weight4bit& w, const Buffer* bias,
                                   Buffer& y, DType dtype) {
  active_kernels().gemv_4bit_int8(as<void>(x), view_of(w), host_or_null(bias), as<void>(y),
                                  dtype);
}

void CpuBackend::do_gemm_4bit_input_grad(const Buffer& dy, size_t m, const Weight4bit& w,
                                         Buffer& dx, DType dtype) {
  active_kernels().gemm_4bit_input_grad(as<void>(dy), m, view_of(w), as<void>(dx), dtype);
}

void CpuBackend::do_gemm_int8(const Buffer& x, size_t m, const WeightInt8& w, const Buffer* bias,
                              Buffer& y) {
  const WeightInt8View v{as<int8_t>(*w.codes), as<float>(*w.scale), as<int32_t>(*w.row_sums),
                         w.out_features, w.in_features};
  active_kernels().gemm_int8(as<float>(x), m, v, static_cast<const float*>(host_or_null(bias)),
                             as<float>(y));
}

void CpuBackend::do_gradient_stats(const Buffer& grad, DType grad_type, size_t n, int blocksize,
                                   Buffer& slots, size_t slot, bool sum) {
  const GradientStats stats =
      active_kernels().gradient_stats(as<void>(grad), grad_type, n, blocksize, sum);
  StepSlot& s = as<StepSlot>(slots)[slot];
  s.grad_sq = stats.sum_sq;
  s.grad_nonfinite = stats.finite ? 0 : 1;
}

void CpuBackend::do_optimizer_update_norms(const OptimizerOperands& op, Buffer& slots, size_t slot,
                                           const Buffer& flags) {
  if (as<StepFlags>(flags)->found_inf) return;
  StepSlot& s = as<StepSlot>(slots)[slot];
  const UpdateNorms norms = active_kernels().optimizer_update_norms(op, s.args);
  s.update_sq = norms.update_sq;
  s.param_sq = norms.param_sq;
}

void CpuBackend::do_optimizer_update(const OptimizerOperands& op, const Buffer& slots,
                                     size_t slot, Buffer& flags) {
  StepFlags& f = *as<StepFlags>(flags);
  if (f.found_inf) return;
  f.skipped_blocks += active_kernels().optimizer_update(op, as<StepSlot>(slots)[slot].args);
}

}  // namespace lowbit::kernels::cpu
