// The CUDA backend: buffers in device memory (allocated stream-ordered, or the
// memory of libtorch CUDA tensors wrapped in place), ops queued on the
// device's current stream (see set_cuda_stream_provider) with no host
// synchronisation; only read(), write() and synchronize() wait.
#pragma once

#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <mutex>

#include "kernels/backend.h"
#include "kernels/cuda/device_memory.h"

namespace lowbit::kernels::cuda {

struct CodeTable;

class CudaBuffer final : public Buffer {
 public:
  // Lends `data` (the memory of a tensor; not owned).
  CudaBuffer(const Backend* owner, void* data, size_t bytes, int device);
  // Owns `memory`, released in stream order.
  CudaBuffer(const Backend* owner, DeviceMemory memory, size_t bytes, int device);
  ~CudaBuffer() override;
  void* data() const { return data_; }

 private:
  void* data_;
  int device_;
  DeviceMemory owned_;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  BackendKind kind() const override { return BackendKind::CUDA; }
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  std::unique_ptr<Buffer> allocate(size_t bytes) override;
  std::unique_ptr<Buffer> wrap(void* data, size_t bytes, Location where) override;
  void write(Buffer& dst, const void* src, size_t bytes, size_t offset) override;
  void read(const Buffer& src, void* dst, size_t bytes, size_t offset) override;
  void synchronize() override;

  int device() const { return device_; }
  // The stream ops are queued on now.
  cudaStream_t stream() const;

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
  void do_gemm_4bit(const Buffer& x, size_t m, const Weight4bit& w, const Buffer* bias, Buffer& y,
                    DType dtype) override;
  void do_gemv_4bit(const Buffer& x, const Weight4bit& w, const Buffer* bias, Buffer& y,
                    DType dtype) override;
  void do_gemm_4bit_input_grad(const Buffer& dy, size_t m, const Weight4bit& w, Buffer& dx,
                               DType dtype) override;
  void do_gemm_int8(const Buffer& x, size_t m, const WeightInt8& w, const Buffer* bias,
                    Buffer& y) override;
  void do_gradient_stats(const Buffer& grad, DType grad_type, size_t n, int blocksize,
                         Buffer& slots, size_t slot, bool sum) override;
  void do_optimizer_update_norms(const OptimizerOperands& op, Buffer& slots, size_t slot,
                                 const Buffer& flags) override;
  void do_optimizer_update(const OptimizerOperands& op, const Buffer& slots, size_t slot,
                           Buffer& flags) override;
  void do_optimizer_prepare(const std::vector<StepItem>& items, bool skip_nonfinite,
                            Buffer& slots, Buffer& flags) override;
  void do_optimizer_scale(const std::vector<StepItem>& items, Buffer& slots,
                          const Buffer& flags) override;

 private:
  // A host <-> device copy on the stream, waited for.
  void transfer(void* to, const void* from, size_t bytes, cudaMemcpyKind kind);
  // The nearest-code table of a codebook buffer, built on the device the
  // first time the buffer is seen (kernels check it against the codebook's
  // current contents and rebuild in place if it changed).
  const CodeTable* code_table(const Buffer& code);

  int device_;
  int sms_ = 1;
  std::mutex mutex_;
  std::map<const void*, std::unique_ptr<Buffer>> tables_;
};

// The backend of CUDA device `device` (shared, created once), and the number
// of devices the runtime sees (0 without a driver).
std::shared_ptr<Backend> backend_for_device(int device);
int device_count();

}  // namespace lowbit::kernels::cuda
