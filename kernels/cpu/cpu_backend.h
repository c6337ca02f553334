// The CPU backend: buffers are host memory (owned, 64-byte aligned, or wrapped
// without a copy) and ops run the kernels of cpu_kernels.h in place.
#pragma once

#include "kernels/backend.h"

namespace lowbit::kernels::cpu {

class CpuBuffer final : public Buffer {
 public:
  // Owns a fresh 64-byte aligned allocation.
  CpuBuffer(const Backend* owner, size_t bytes);
  // Lends `data` (not owned; must outlive the buffer).
  CpuBuffer(const Backend* owner, void* data, size_t bytes);
  ~CpuBuffer() override;
  void* data() const { return data_; }

 private:
  void* data_;
  bool owned_;
};

class CpuBackend final : public Backend {
 public:
  BackendKind kind() const override { return BackendKind::CPU; }
  std::string name() const override { return "cpu"; }
  std::unique_ptr<Buffer> allocate(size_t bytes) override;
  std::unique_ptr<Buffer> wrap(void* data, size_t bytes, Location where) override;
  void write(Buffer& dst, const void* src, size_t bytes, size_t offset) override;
  void read(const Buffer& src, void* dst, size_t bytes, size_t offset) override;

  // The host pointer behind a buffer of this backend.
  static void* host(const Buffer& b) { return static_cast<const CpuBuffer&>(b).data(); }

 protected:
  void do_copy(const Buffer& src, Buffer& dst, size_t bytes) override;
  void do_quantize_blockwise(const Buffer& x, DType x_type, size_t n, int blocksize,
                             const Buffer& code, Buffer& absmax, Buffer& codes,
                             const StochasticRounding& rounding) override;
  void do_dequantize_blockwise(const Buffer& codes, const Buffer& absmax, const Buffer& code,
                               size_t n, int blocksize, Buffer& out, DType out_type,
                               float offset) override;
  void do_quantize_4bit(const Buffer& x, DType x_type, size_t n, int blocksize, Format4 format,
                        Buffer& absmax, Buffer& packed) override;
  void do_dequantize_4bit(const Buffer& packed, const Buffer& absmax, size_t n, int blocksize,
                          Format4 format, Buffer& out, DType out_type) override;
  void do_gradient_stats(const Buffer& grad, DType grad_type, size_t n, int blocksize,
                         Buffer& slots, size_t slot, bool sum) override;
  void do_optimizer_update_norms(const OptimizerOperands& op, Buffer& slots, size_t slot,
                                 const Buffer& flags) override;
  void do_optimizer_update(const OptimizerOperands& op, const Buffer& slots, size_t slot,
                           Buffer& flags) override;

  // 4-bit matmul
  void do_gemm_4bit(const Buffer& x, size_t m, const Weight4bit& w, const Buffer* bias, Buffer& y,
                    DType dtype) override;
  void do_gemv_4bit(const Buffer& x, const Weight4bit& w, const Buffer* bias, Buffer& y,
                    DType dtype) override;
  void do_gemv_4bit_int8(const Buffer& x, const Weight4bit& w, const Buffer* bias, Buffer& y,
                         DType dtype) override;
  void do_gemm_4bit_input_grad(const Buffer& dy, size_t m, const Weight4bit& w, Buffer& dx,
                               DType dtype) override;
  void do_gemm_int8(const Buffer& x, size_t m, const WeightInt8& w, const Buffer* bias,
                    Buffer& y) override;
};

}  // namespace lowbit::kernels::cpu
