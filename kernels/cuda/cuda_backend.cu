#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/gemm_4bit.h"
#include "kernels/cuda/gemm_int8.h"

namespace lowbit::kernels::cuda {
namespace {

// Makes `device` current for the scope (the runtime's current device is per
// host thread; ops of cuda:1 must not land on cuda:0).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    LOWBIT_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) LOWBIT_CUDA_CHECK(cudaSetDevice(device));
    device_ = device;
  }
  ~DeviceScope() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
  int device_ = 0;
};

cudaStream_t stream_of(int device) {
  const CudaStreamProvider provider = cuda_stream_provider();
  return provider ? static_cast<cudaStream_t>(provider(device)) : cudaStream_t(nullptr);
}

template <typename T = void>
T* ptr(const Buffer& b) {
  return static_cast<T*>(static_cast<const CudaBuffer&>(b).data());
}
template <typename T = void>
T* ptr_or_null(const Buffer* b) {
  return b ? ptr<T>(*b) : nullptr;
}

}  // namespace

CudaBuffer::CudaBuffer(const Backend* owner, void* data, size_t bytes, int device)
    : Buffer(owner, bytes), data_(data), device_(device) {}

CudaBuffer::CudaBuffer(const Backend* owner, DeviceMemory memory, size_t bytes, int device)
    : Buffer(owner, bytes), data_(memory.ptr), device_(device), owned_(memory) {}

CudaBuffer::~CudaBuffer() {
  if (!owned_.ptr) return;
  // Errors are not thrown from a destructor (the stream provider and the
  // allocator are libtorch's, which throws once its CUDA state is gone).
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) return;
  if (previous != device_) cudaSetDevice(device_);
  try {
    device_release(owned_, stream_of(device_));
  } catch (...) {
  }
  if (previous != device_) cudaSetDevice(previous);
}

CudaBackend::CudaBackend(int device) : device_(device) {
  DeviceScope scope(device_);
  LOWBIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device_));
  sms_ = std::max(sms_, 1);
}

cudaStream_t CudaBackend::stream() const { return stream_of(device_); }

std::unique_ptr<Buffer> CudaBackend::allocate(size_t bytes) {
  DeviceScope scope(device_);
  return std::make_unique<CudaBuffer>(this, device_allocate(bytes, stream()), bytes, device_);
}

std::unique_ptr<Buffer> CudaBackend::wrap(void* data, size_t bytes, Location where) {
  if (where != Location::cuda(device_)) return nullptr;
  return std::make_unique<CudaBuffer>(this, data, bytes, device_);
}

void CudaBackend::write(Buffer& dst, const void* src, size_t bytes, size_t offset) {
  check_range(dst, bytes, offset, "write", "dst");
  transfer(ptr<uint8_t>(dst) + offset, src, bytes, cudaMemcpyHostToDevice);
}

void CudaBackend::read(const Buffer& src, void* dst, size_t bytes, size_t offset) {
  check_range(src, bytes, offset, "read", "src");
  transfer(dst, ptr<uint8_t>(src) + offset, bytes, cudaMemcpyDeviceToHost);
}

void CudaBackend::transfer(void* to, const void* from, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return;
  DeviceScope scope(device_);
  const cudaStream_t s = stream();
  LOWBIT_CUDA_CHECK(cudaMemcpyAsync(to, from, bytes, kind, s));
  LOWBIT_CUDA_CHECK(cudaStreamSynchronize(s));
}

void CudaBackend::synchronize() {
  DeviceScope scope(device_);
  LOWBIT_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void CudaBackend::do_copy(const Buffer& src, Buffer& dst, size_t bytes) {
  DeviceScope scope(device_);
  LOWBIT_CUDA_CHECK(cudaMemcpyAsync(ptr(dst), ptr(src), bytes, cudaMemcpyDeviceToDevice, stream()));
}

const CodeTable* CudaBackend::code_table(const Buffer& code) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = tables_[ptr(code)];
  if (!slot) {
    slot = allocate(sizeof(CodeTable));
    build_code_table(ptr<const float>(code), ptr<CodeTable>(*slot), {stream(), sms_});
    // Once per codebook buffer: the table is complete before any stream uses
    // it (kernels on another stream would otherwise race with its build).
    LOWBIT_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }
  return ptr<const CodeTable>(*slot);
}

// ---- quantization ----

void CudaBackend::do_quantize_blockwise(const Buffer& x, DType x_type, size_t n, int blocksize,
                                        const Buffer& code, Buffer& absmax, Buffer& codes,
                                        const StochasticRounding& rounding) {
  DeviceScope scope(device_);
  cuda::quantize_blockwise(ptr(x), x_type, n, blocksize, ptr<const float>(code), code_table(code),
                           ptr<float>(absmax), ptr<uint8_t>(codes), rounding,
                           {stream(), sms_});
}

void CudaBackend::do_dequantize_blockwise(const Buffer& codes, const Buffer& absmax,
                                          const Buffer& code, size_t n, int blocksize,
                                          Buffer& out, DType out_type, float offset) {
  DeviceScope scope(device_);
  cuda::dequantize_blockwise(ptr<const uint8_t>(codes), ptr<const float>(absmax),
                             ptr<const float>(code), n, blocksize, ptr(out), out_type, offset,
                             {stream(), sms_});
}

void CudaBackend::do_quantize_4bit(const Buffer& x, DType x_type, size_t n, int blocksize,
                                   Format4 format, Buffer& absmax, Buffer& packed) {
  DeviceScope scope(device_);
  cuda::quantize_4bit(ptr(x), x_type, n, blocksize, format, ptr<float>(absmax),
                      ptr<uint8_t>(packed), {stream(), sms_});
}

void CudaBackend::do_dequantize_4bit(const Buffer& packed, const Buffer& absmax, size_t n,
                                     int blocksize, Format4 format, Buffer& out,
                                     DType out_type) {
  DeviceScope scope(device_);
  cuda::dequantize_4bit(ptr<const uint8_t>(packed), ptr<const float>(absmax), n, blocksize,
                        format, ptr(out), out_type, {stream(), sms_});
}

// ---- 4-bit matmul ----

namespace {

Weight4bitDev device_view(const Weight4bit& w) {
  Weight4bitDev v;
  v.packed = ptr<const uint8_t>(*w.packed);
  if (w.double_quant()) {
    v.absmax_codes = ptr<const uint8_t>(*w.absmax);
    v.nested_absmax = ptr<const float>(*w.nested_absmax);
    v.nested_code = ptr<const float>(*w.nested_code);
    v.nested_shift = log2_exact(size_t(w.nested_blocksize));
    v.offset = w.offset;
  } else {
    v.absmax = ptr<const float>(*w.absmax);
  }
  v.out_features = w.out_features;
  v.in_features = w.in_features;
  v.block_shift = log2_exact(size_t(w.blocksize));
  const Format4Table& table = format4_table(w.format);
  std::copy(table.value.begin(), table.value.end(), v.value);
  return v;
}

}  // namespace

void CudaBackend::do_gemm_4bit(const Buffer& x, size_t m, const Weight4bit& w, const Buffer* bias,
                               Buffer& y, DType dtype) {
  DeviceScope scope(device_);
  cuda::gemm_4bit(ptr(x), m, device_view(w), ptr_or_null(bias), ptr(y), dtype, stream());
}

void CudaBackend::do_gemv_4bit(const Buffer& x, const Weight4bit& w, const Buffer* bias,
                               Buffer& y, DType dtype) {
  do_gemm_4bit(x, 1, w, bias, y, dtype);
}

void CudaBackend::do_gemm_4bit_input_grad(const Buffer& dy, size_t m, const Weight4bit& w,
                                          Buffer& dx, DType dtype) {
  DeviceScope scope(device_);
  cuda::gemm_4bit_input_grad(ptr(dy), m, device_view(w), ptr(dx), dtype, stream());
}

void CudaBackend::do_gemm_int8(const Buffer& x, size_t m, const WeightInt8& w, const Buffer* bias,
                               Buffer& y) {
  DeviceScope scope(device_);
  const WeightInt8Dev v{ptr<const int8_t>(*w.codes), ptr<const float>(*w.scale), w.out_features,
                        w.in_features};
  cuda::gemm_int8(ptr<const float>(x), m, v, ptr_or_null<const float>(bias), ptr<float>(y),
                  stream());
}

// ---- optimizers ----

void CudaBackend::do_gradient_stats(const Buffer& grad, DType grad_type, size_t n, int blocksize,
                                    Buffer& slots, size_t slot, bool sum) {
  DeviceScope scope(device_);
  const cudaStream_t s = stream();
  // The chunks' partial sums, then the two words of the check without the sum.
  DeviceScratch partials((2 * sum_chunks(n, blocksize) + 1) * sizeof(double), s);
  cuda::gradient_stats(ptr(grad), grad_type, n, blocksize, ptr<StepSlot>(slots) + slot,
                       partials.as<double>(), sum, {s, sms_});
}

namespace {

OptimizerPointers pointers_of(const OptimizerOperands& op) {
  OptimizerPointers p;
  p.rule = op.rule;
  p.n = op.n;
  p.blocksize = op.blocksize;
  p.param_type = op.param_type;
  p.param = ptr(*op.param);
  p.grad = ptr(*op.grad);
  p.quantized = op.quantized;
  p.state1 = ptr(*op.state1);
  p.state2 = ptr_or_null(op.state2);
  if (op.quantized) {
    p.absmax1 = ptr<float>(*op.absmax1);
    p.qmap1 = ptr<const float>(*op.qmap1);
    if (op.state2) {
      p.absmax2 = ptr<float>(*op.absmax2);
      p.qmap2 = ptr<const float>(*op.qmap2);
    }
  }
  return p;
}

}  // namespace

void CudaBackend::do_optimizer_update_norms(const OptimizerOperands& op, Buffer& slots,
                                            size_t slot, const Buffer& flags) {
  DeviceScope scope(device_);
  OptimizerPointers p = pointers_of(op);
  if (op.quantized) {
    p.table1 = code_table(*op.qmap1);
    if (op.state2) p.table2 = code_table(*op.qmap2);
  }
  const cudaStream_t s = stream();
  DeviceScratch partials(2 * sum_chunks(op.n, op.blocksize) * sizeof(double), s);
  cuda::optimizer_update_norms(p, ptr<StepSlot>(slots) + slot, ptr<const StepFlags>(flags),
                               partials.as<double>(), {s, sms_});
}

void CudaBackend::do_optimizer_update(const OptimizerOperands& op, const Buffer& slots,
                                      size_t slot, Buffer& flags) {
  DeviceScope scope(device_);
  OptimizerPointers p = pointers_of(op);
  if (op.quantized) {
    p.table1 = code_table(*op.qmap1);
    if (op.state2) p.table2 = code_table(*op.qmap2);
  }
  cuda::optimizer_update(p, ptr<const StepSlot>(slots) + slot, ptr<StepFlags>(flags),
                         {stream(), sms_});
}

namespace {

// Items in launch-sized batches with device pointers.
std::vector<ItemBatch> batches_of(const std::vector<StepItem>& items) {
  std::vector<ItemBatch> batches((items.size() + kItemsPerLaunch - 1) / kItemsPerLaunch);
  for (size_t i = 0; i < items.size(); ++i) {
    ItemBatch& batch = batches[i / kItemsPerLaunch];
    DeviceItem& d = batch.items[i % kItemsPerLaunch];
    d.slot = items[i].slot;
    d.hparams = items[i].hparams;
    d.step = ptr<int64_t>(*items[i].step);
    d.history = ptr_or_null<float>(items[i].history);
    d.checked = items[i].checked ? 1 : 0;
    d.reserved = 0;
    batch.count = int32_t(i % kItemsPerLaunch + 1);
  }
  return batches;
}

}  // namespace

void CudaBackend::do_optimizer_prepare(const std::vector<StepItem>& items, bool skip_nonfinite,
                                       Buffer& slots, Buffer& flags) {
  DeviceScope scope(device_);
  const Launch l{stream(), sms_};
  const std::vector<ItemBatch> batches = batches_of(items);
  step_clear_found(ptr<StepFlags>(flags), l);
  for (const ItemBatch& batch : batches)
    step_decide(batch, skip_nonfinite, ptr<const StepSlot>(slots), ptr<StepFlags>(flags), l);
  for (size_t i = 0; i < batches.size(); ++i)
    step_apply(batches[i], i == 0, ptr<StepSlot>(slots), ptr<StepFlags>(flags), l);
}

void CudaBackend::do_optimizer_scale(const std::vector<StepItem>& items, Buffer& slots,
                                     const Buffer& flags) {
  DeviceScope scope(device_);
  const Launch l{stream(), sms_};
  for (const ItemBatch& batch : batches_of(items))
    step_scale(batch, ptr<StepSlot>(slots), ptr<const StepFlags>(flags), l);
}

// ---- the backends of the devices ----

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

std::shared_ptr<Backend> backend_for_device(int device) {
  static std::mutex mutex;
  // Never destroyed: at process exit libtorch's CUDA state (streams, caching
  // allocator) may be gone before static destructors run, and the memory
  // with it.
  static auto* backends = new std::map<int, std::shared_ptr<Backend>>;
  const int count = device_count();
  LOWBIT_CHECK(device >= 0 && device < count, "CUDA device ", device, " is not available; ",
               count == 0 ? std::string("this machine has no CUDA device or driver")
                          : "devices 0.." + std::to_string(count - 1) + " are visible");
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = (*backends)[device];
  if (!slot) slot = std::make_shared<CudaBackend>(device);
  return slot;
}

}  // namespace lowbit::kernels::cuda
