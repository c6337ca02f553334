// The OpenCL backend: device buffers (cl_mem), the embedded programs of
// kernels/opencl/*.cl built once per device, ops enqueued on one in-order queue.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "kernels/backend.h"
#include "kernels/opencl/cl_runtime.h"

namespace lowbit::kernels::opencl {

class ClBuffer final : public Buffer {
 public:
  // `host`: the host memory the buffer uses in place (wrap), null for device memory.
  ClBuffer(const Backend* owner, MemHandle mem, size_t bytes, void* host = nullptr)
      : Buffer(owner, bytes), mem_(std::move(mem)), host_(host) {}
  cl_mem mem() const { return mem_.get(); }
  bool wraps_host() const { return host_ != nullptr; }
  // The host memory of a wrapped buffer; null for device memory.
  const void* host() const { return host_; }

 private:
  MemHandle mem_;
  void* host_;
};

class OpenClBackend final : public Backend {
 public:
  explicit OpenClBackend(const DeviceInfo& device);
  BackendKind kind() const override { return BackendKind::OpenCL; }
  std::string name() const override { return "opencl:" + ctx_.info().label; }
  std::unique_ptr<Buffer> allocate(size_t bytes) override;
  // Host memory used in place (CL_MEM_USE_HOST_PTR) on a device that shares
  // the host's memory (CL_DEVICE_HOST_UNIFIED_MEMORY: PoCL, integrated GPUs),
  // when it starts on a 16-byte boundary (the kernels' vector accesses);
  // otherwise nullptr. An op that passes such a buffer to a kernel returns
  // once the kernel has finished and the memory has been mapped and unmapped,
  // so the host sees the results in place, as on the CPU backend.
  std::unique_ptr<Buffer> wrap(void* data, size_t bytes, Location where) override;
  void write(Buffer& dst, const void* src, size_t bytes, size_t offset) override;
  void read(const Buffer& src, void* dst, size_t bytes, size_t offset) override;
  void read_all(const std::vector<HostRead>& reads) override;
  void write_all(const std::vector<HostWrite>& writes) override;
  void synchronize() override;
  // Builds the update kernel variant and the step's bookkeeping kernels for
  // `op`, and allocates the buffers the update (and its norms) will use.
  void ready_optimizer_update(const OptimizerOperands& op, bool norms) override;

  DeviceContext& context() { return ctx_; }

  // How the kernels that work block by block (the fused optimizer update, the
  // quantizers) spread a quantization block over work-items, and how many
  // elements a dequantizer's item takes: by the device type (Auto: a block
  // per item and one element on CPU devices, 8 elements per item and 4 on
  // GPUs), or forced, so that tests run both on PoCL.
  enum class BlockLayout { Auto, BlockPerItem, EightPerItem };
  void set_block_layout(BlockLayout layout);

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
  // Queued without a wait on devices with double precision: the kernels read
  // the step's arguments and found_inf from `slots` and `flags`, and write
  // their sums and counts there. Elsewhere the host adds the blocks' sums.
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
  void do_gemm_4bit_input_grad(const Buffer& dy, size_t m, const Weight4bit& w, Buffer& dx,
                               DType dtype) override;
  // int8 matmul: rows quantized by one kernel, multiplied by a tiled one.
  void do_gemm_int8(const Buffer& x, size_t m, const WeightInt8& w, const Buffer* bias,
                    Buffer& y) override;

 private:
  // Kernel `name` of the program built from kernels/opencl/<program>.cl with
  // `options`; kernels are created once and their arguments set under
  // `mutex_`, since a cl_kernel is not thread-safe.
  cl_kernel kernel(const char* program, const char* name, const std::string& options = "");
  // Largest power-of-two work-group size <= limit that `k` accepts here.
  size_t group_size(cl_kernel k, size_t limit) const;
  void launch(cl_kernel k, size_t global, size_t local);
  // clEnqueueNDRangeKernel of `k`, then, if its arguments included wrapped
  // host memory, the wait and the map/unmap that make the host see it.
  void enqueue(cl_kernel k, cl_uint dims, const size_t* global, const size_t* local);
  // One host <-> buffer copy queued; with `wait` the host waits for it (read / write), else the
  // caller waits before the host memory goes (read_all / write_all).
  void enqueue_write(Buffer& dst, const void* src, size_t bytes, size_t offset, bool wait);
  void enqueue_read(const Buffer& src, void* dst, size_t bytes, size_t offset, bool wait);
  void finish_host_access(const std::vector<cl_mem>& wrapped);
  // Device copies of a 4-bit format's tables.
  struct Table4 {
    std::unique_ptr<Buffer> table;     // 15 midpoints, then the 16 values
    std::unique_ptr<Buffer> quantize;  // the quantizer's table (code_table.h, build_table4)
  };
  const Table4& table4(Format4 format);
  // A device buffer of at least `bytes` reused by the optimizer ops for their
  // per-block partial sums, and by gemm_4bit for its K split's sums (grown on
  // demand, under `mutex_`; the queue runs in order).
  Buffer& scratch(size_t bytes);
  // sums_into_slot's per-chunk sums for nb blocks (two doubles per chunk of 256
  // blocks, at least one chunk), grown likewise.
  Buffer& chunk_sums(size_t nb);
  // The geometry of kernels built per block layout (-DLB_LANES work-items per
  // block, -DLB_PER_ITEM elements each): chosen from the layout (on GPUs
  // `per_item` elements per item) and the device's properties, the lanes
  // halved (each item's elements doubled) until a block fits in a work-group
  // that every kernel allows. `build` makes the kernels with the given options
  // and answers the largest group (at most its second argument) they all run.
  struct BlockGeometry {
    size_t lanes = 1;
    size_t group = 1;
    size_t table_bytes = 0;  // code tables each group copies into local memory (LB_LOCAL_TABLES)
    size_t groups_per_unit = 0;  // then groups launched per compute unit, each walking blocks
  };
  BlockGeometry block_geometry(
      const char* op, size_t blocksize, size_t per_item,
      const std::function<size_t(const std::string& options, size_t group)>& build);
  // The fused update built for an operand kind and block size, with its
  // geometry; made once per backend (device).
  struct UpdateKernel : BlockGeometry {
    cl_kernel kernel = nullptr;
    cl_kernel norms = nullptr;  // optimizer_update_norms_fused, same geometry
  };
  const UpdateKernel& update_kernel(const OptimizerOperands& op);
  // How a block kernel holds `tables` bytes of code tables in local memory: the build options,
  // the bytes and the groups per compute unit (none of them when the layout is a CPU device's
  // or the tables would not fit beside `group` items' maxima of `per_item` bytes).
  struct LocalTables {
    std::string options;
    size_t bytes = 0;
    size_t groups_per_unit = 0;
  };
  LocalTables local_tables(size_t tables, size_t group, size_t per_item) const;
  // A quantizer of quantize.cl ("quantize_blockwise", "quantize_4bit") for a
  // block size and index width, with its geometry.
  struct BlockKernel : BlockGeometry {
    cl_kernel kernel = nullptr;
  };
  const BlockKernel& quantize_kernel(const char* name, int blocksize, const std::string& index);
  // Launches a block kernel over the blocks of n elements: a group per few blocks, or, where
  // the groups copy code tables, about as many groups as run at once, each walking many blocks.
  void launch_blocks(const BlockGeometry& g, cl_kernel k, size_t n, int blocksize);
  // Whether the block layout is the GPUs' (by the device, or forced).
  bool gpu_layout() const;
  // The build option for 32-bit index arithmetic (common.cl's LB_IDX32) where every index of
  // a call over `count` elements (or blocks) fits in 31 bits; empty otherwise, or where the
  // device info forbids narrow indices (tests of the 64-bit path).
  std::string index_option(size_t count) const;
  // Elements per work-item of the dequantizers (4 in the GPU layout, 1 in
  // the CPU devices'), and the build option that sets it.
  size_t dequantize_per_item() const;
  std::string dequantize_options() const;
  // The encoding table (code_table.h) of the codebook in `qmap`, built on the
  // device into table buffer `which` (0 or 1) by a kernel queued before the
  // op that reads it: no wait, and a codebook changed in place is seen. A
  // codebook in wrapped host memory is compared on the host with the one the
  // table holds, and the build is skipped when they are the same bytes (on
  // PoCL a build takes about 0.3 ms, and every update asks for its tables).
  const Buffer& code_table(const Buffer& qmap, int which);
  // Table buffer `which`, allocated at first use.
  Buffer& code_table_buffer(int which);
  // The update's count of rejected blocks (zero between updates).
  Buffer& rejected_counter();
  // The per-block partial sums in `partial` (`width` floats per block, nb blocks) added in the
  // CPU's order (chunks of 256 blocks in double, then the chunks) into slots[slot]: the first
  // floats' total at byte `first` of the StepSlot, and at byte `second` the second floats'
  // (width 2, a double) or whether a first float was not finite (width 1, a uint). Nothing
  // when `flags` is given and its found_inf is set.
  void sums_into_slot(const Buffer& partial, size_t nb, unsigned width, Buffer& slots,
                      size_t slot, size_t first, size_t second, const Buffer* flags);

  // 4-bit matmul plumbing (gemm_4bit.cl): the tiled kernel's shape class and
  // K split chosen from m and the device's compute units.
  void set_weight_args(cl_kernel k, cl_uint first, const Weight4bit& w);
  void launch_gemm(const Buffer& a, size_t m, size_t n, size_t k, bool transposed,
                   const Weight4bit& w, const Buffer* bias, Buffer& c, DType dtype);
  // gemm_int8.cl's square tiles: the largest t <= 16 with t * t items allowed.
  size_t gemm_tile() const;
  std::string gemm_options() const;

  DeviceContext ctx_;
  std::mutex mutex_;
  std::map<std::string, KernelHandle> kernels_;
  std::map<std::string, UpdateKernel> update_kernels_;
  std::map<std::string, BlockKernel> quantize_kernels_;
  BlockLayout block_layout_ = BlockLayout::Auto;
  std::unique_ptr<Buffer> code_tables_[2];
  // The codebook bytes each table was last built from, where they were host memory; else empty.
  std::vector<unsigned char> table_sources_[2];
  std::unique_ptr<Buffer> rejected_;
  Table4 tables_[2];
  std::unique_ptr<Buffer> scratch_;
  std::unique_ptr<Buffer> chunk_scratch_;
};

}  // namespace lowbit::kernels::opencl
