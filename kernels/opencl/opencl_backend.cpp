#include "kernels/opencl/opencl_backend.h"

#include "kernels/opencl/code_table.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lowbit::kernels::opencl {
namespace {

cl_mem mem_of(const Buffer& b) { return static_cast<const ClBuffer&>(b).mem(); }

// Blocks per chunk of the partial sums (the CPU's sum_blocks).
constexpr size_t kBlocksPerChunk = 256;

// Wrapped host buffers among the kernel arguments set since the last enqueue
// on this thread: an op sets its arguments and enqueues on one thread, under
// the backend's mutex.
thread_local std::vector<cl_mem> wrapped_args;

// Sets kernel arguments in order; a buffer argument passes its cl_mem, a
// LocalBytes argument reserves local memory.
struct LocalBytes {
  size_t bytes;
};

// The __local argument a block kernel copies its code tables into. A local
// argument may not have 0 bytes, so kernels without local tables (which never
// touch it) get 4.
template <typename Geometry>
LocalBytes tables_arg(const Geometry& g) {
  return LocalBytes{std::max<size_t>(g.table_bytes, 4)};
}

void set_arg(cl_kernel k, cl_uint i, const Buffer& b) {
  const cl_mem m = mem_of(b);
  if (static_cast<const ClBuffer&>(b).wraps_host()) wrapped_args.push_back(m);
  LOWBIT_CL_CHECK(clSetKernelArg(k, i, sizeof(cl_mem), &m));
}
// A null buffer pointer passes a null cl_mem (an absent optional operand).
void set_arg(cl_kernel k, cl_uint i, const Buffer* b) {
  if (b) return set_arg(k, i, *b);
  const cl_mem m = nullptr;
  LOWBIT_CL_CHECK(clSetKernelArg(k, i, sizeof(cl_mem), &m));
}
void set_arg(cl_kernel k, cl_uint i, LocalBytes l) {
  LOWBIT_CL_CHECK(clSetKernelArg(k, i, l.bytes, nullptr));
}
template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
void set_arg(cl_kernel k, cl_uint i, const T& v) {
  LOWBIT_CL_CHECK(clSetKernelArg(k, i, sizeof(T), &v));
}

template <typename... Args>
void set_args(cl_kernel k, const Args&... args) {
  cl_uint i = 0;
  (set_arg(k, i++, args), ...);
}

}  // namespace

OpenClBackend::OpenClBackend(const DeviceInfo& device) : ctx_(device) {}

std::unique_ptr<Buffer> OpenClBackend::allocate(size_t bytes) {
  cl_int err = CL_SUCCESS;
  MemHandle mem(clCreateBuffer(ctx_.context(), CL_MEM_READ_WRITE, std::max<size_t>(bytes, 1),
                               nullptr, &err));
  if (err != CL_SUCCESS)
    fail("lowbit: allocating ", bytes, " bytes on OpenCL device ", ctx_.info().label,
         " failed with ", cl_error_name(err), " (", err, ")");
  return std::make_unique<ClBuffer>(this, std::move(mem), bytes);
}

std::unique_ptr<Buffer> OpenClBackend::wrap(void* data, size_t bytes, Location where) {
  // A discrete device would copy the memory on every use: there the library
  // keeps its own device buffers instead.
  if (!where.is_host() || !ctx_.info().host_unified || bytes == 0 ||
      reinterpret_cast<uintptr_t>(data) % 16 != 0)
    return nullptr;
  cl_int err = CL_SUCCESS;
  MemHandle mem(
      clCreateBuffer(ctx_.context(), CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR, bytes, data, &err));
  if (err != CL_SUCCESS)
    fail("lowbit: using ", bytes, " bytes of host memory on OpenCL device ", ctx_.info().label,
         " failed with ", cl_error_name(err), " (", err, ")");
  return std::make_unique<ClBuffer>(this, std::move(mem), bytes, data);
}

void OpenClBackend::enqueue_write(Buffer& dst, const void* src, size_t bytes, size_t offset,
                                  bool wait) {
  check_range(dst, bytes, offset, "write", "dst");
  if (bytes == 0) return;
  CommandEvent event(ctx_, "write buffer");
  LOWBIT_CL_CHECK(clEnqueueWriteBuffer(ctx_.queue(), mem_of(dst), wait ? CL_TRUE : CL_FALSE,
                                       offset, bytes, src, 0, nullptr, event.get()));
}

void OpenClBackend::enqueue_read(const Buffer& src, void* dst, size_t bytes, size_t offset,
                                 bool wait) {
  check_range(src, bytes, offset, "read", "src");
  if (bytes == 0) return;
  CommandEvent event(ctx_, "read buffer");
  LOWBIT_CL_CHECK(clEnqueueReadBuffer(ctx_.queue(), mem_of(src), wait ? CL_TRUE : CL_FALSE,
                                      offset, bytes, dst, 0, nullptr, event.get()));
}

void OpenClBackend::write(Buffer& dst, const void* src, size_t bytes, size_t offset) {
  enqueue_write(dst, src, bytes, offset, true);
}

void OpenClBackend::read(const Buffer& src, void* dst, size_t bytes, size_t offset) {
  enqueue_read(src, dst, bytes, offset, true);
}

namespace {

// Waits for the queue when it goes out of scope, also when an enqueue threw: copies queued
// without waiting read or write host memory that the caller may free once we return.
struct FinishOnExit {
  cl_command_queue queue;
  ~FinishOnExit() { clFinish(queue); }
};

}  // namespace

// Queued without waiting, then one wait; the copies run in the queue's order.
void OpenClBackend::read_all(const std::vector<HostRead>& reads) {
  FinishOnExit finish{ctx_.queue()};
  for (const HostRead& r : reads) enqueue_read(*r.src, r.dst, r.bytes, 0, false);
  LOWBIT_CL_CHECK(clFinish(ctx_.queue()));
}

void OpenClBackend::write_all(const std::vector<HostWrite>& writes) {
  FinishOnExit finish{ctx_.queue()};
  for (const HostWrite& w : writes) enqueue_write(*w.dst, w.src, w.bytes, 0, false);
  LOWBIT_CL_CHECK(clFinish(ctx_.queue()));
}

void OpenClBackend::do_copy(const Buffer& src, Buffer& dst, size_t bytes) {
  {
    CommandEvent event(ctx_, "copy buffer");
    LOWBIT_CL_CHECK(clEnqueueCopyBuffer(ctx_.queue(), mem_of(src), mem_of(dst), 0, 0, bytes, 0,
                                        nullptr, event.get()));
  }
  if (static_cast<const ClBuffer&>(dst).wraps_host()) finish_host_access({mem_of(dst)});
}

void OpenClBackend::synchronize() { LOWBIT_CL_CHECK(clFinish(ctx_.queue())); }

cl_kernel OpenClBackend::kernel(const char* program, const char* name, const std::string& options) {
  wrapped_args.clear();  // left behind by an op that failed before its enqueue
  const std::string key = std::string(program) + "/" + name + " " + options;
  auto it = kernels_.find(key);
  if (it != kernels_.end()) return it->second.get();
  cl_int err = CL_SUCCESS;
  KernelHandle k(clCreateKernel(ctx_.program(program, options), name, &err));
  LOWBIT_CL_CHECK_RESULT(err, std::string("clCreateKernel('") + name + "')");
  cl_kernel raw = k.get();
  kernels_.emplace(key, std::move(k));
  return raw;
}

size_t OpenClBackend::group_size(cl_kernel k, size_t limit) const {
  size_t kernel_max = 0;
  LOWBIT_CL_CHECK(clGetKernelWorkGroupInfo(k, ctx_.device(), CL_KERNEL_WORK_GROUP_SIZE,
                                           sizeof(kernel_max), &kernel_max, nullptr));
  const size_t cap = std::min({limit, kernel_max, ctx_.max_work_group_size()});
  size_t g = 1;
  while (g * 2 <= cap) g *= 2;
  return g;
}

void OpenClBackend::launch(cl_kernel k, size_t global, size_t local) {
  enqueue(k, 1, &global, local ? &local : nullptr);
}

void OpenClBackend::enqueue(cl_kernel k, cl_uint dims, const size_t* global, const size_t* local) {
  std::vector<cl_mem> wrapped;
  wrapped.swap(wrapped_args);
  {
    CommandEvent event(ctx_, k);
    LOWBIT_CL_CHECK(clEnqueueNDRangeKernel(ctx_.queue(), k, dims, nullptr, global, local, 0,
                                           nullptr, event.get()));
  }
  if (!wrapped.empty()) finish_host_access(wrapped);
}

// The standard leaves memory used through CL_MEM_USE_HOST_PTR undefined for
// the host until it is mapped; on a device that shares the host's memory the
// map costs no copy (PoCL: about 25 us per buffer).
void OpenClBackend::finish_host_access(const std::vector<cl_mem>& wrapped) {
  for (cl_mem m : wrapped) {
    size_t bytes = 0;
    LOWBIT_CL_CHECK(clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof(bytes), &bytes, nullptr));
    cl_int err = CL_SUCCESS;
    CommandEvent map(ctx_, "map host buffer"), unmap(ctx_, "unmap host buffer");
    void* p = clEnqueueMapBuffer(ctx_.queue(), m, CL_FALSE, CL_MAP_READ, 0, bytes, 0, nullptr,
                                 map.get(), &err);
    LOWBIT_CL_CHECK_RESULT(err, "clEnqueueMapBuffer");
    LOWBIT_CL_CHECK(clEnqueueUnmapMemObject(ctx_.queue(), m, p, 0, nullptr, unmap.get()));
  }
  LOWBIT_CL_CHECK(clFinish(ctx_.queue()));
}

const OpenClBackend::Table4& OpenClBackend::table4(Format4 format) {
  Table4& t = tables_[int(format)];
  if (!t.table) {
    const Format4Table& f = format4_table(format);
    std::vector<float> values(f.midpoint.begin(), f.midpoint.end());
    values.insert(values.end(), f.value.begin(), f.value.end());
    t.table = allocate(values.size() * sizeof(float));
    write(*t.table, values.data(), values.size() * sizeof(float), 0);
    const std::vector<uint32_t> q = build_table4(f);
    t.quantize = allocate(q.size() * sizeof(uint32_t));
    write(*t.quantize, q.data(), q.size() * sizeof(uint32_t), 0);
  }
  return t;
}

void OpenClBackend::do_quantize_blockwise(const Buffer& x, DType x_type, size_t n, int blocksize,
                                          const Buffer& code, Buffer& absmax, Buffer& codes,
                                          const StochasticRounding& rounding) {
  std::lock_guard<std::mutex> lock(mutex_);
  // The table first: its build is queued before the quantizer that reads it.
  const Buffer& table = code_table(code, 0);
  const BlockKernel& q = quantize_kernel("quantize_blockwise", blocksize, index_option(n));
  set_args(q.kernel, x, cl_int(x_type), cl_ulong(n), cl_uint(blocksize), table, absmax, codes,
           cl_int(rounding.enabled), cl_uint(rounding.seed), cl_uint(rounding.seed >> 32),
           LocalBytes{2 * q.group * sizeof(cl_uint)},
           tables_arg(q));
  launch_blocks(q, q.kernel, n, blocksize);
}

void OpenClBackend::do_dequantize_blockwise(const Buffer& codes, const Buffer& absmax,
                                            const Buffer& code, size_t n, int blocksize,
                                            Buffer& out, DType out_type, float offset) {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t per_item = dequantize_per_item();
  cl_kernel k = kernel("quantize", "dequantize_blockwise", dequantize_options());
  set_args(k, codes, absmax, code, cl_ulong(n), cl_uint(log2_exact(size_t(blocksize))), out,
           cl_int(out_type), offset);
  launch(k, (n + per_item - 1) / per_item, 0);
}

void OpenClBackend::do_quantize_4bit(const Buffer& x, DType x_type, size_t n, int blocksize,
                                     Format4 format, Buffer& absmax, Buffer& packed) {
  std::lock_guard<std::mutex> lock(mutex_);
  const Table4& t = table4(format);
  const BlockKernel& q = quantize_kernel("quantize_4bit", blocksize, index_option(n));
  set_args(q.kernel, x, cl_int(x_type), cl_ulong(n), cl_uint(blocksize), *t.quantize, absmax,
           packed, LocalBytes{q.group * sizeof(cl_uint)}, tables_arg(q));
  launch_blocks(q, q.kernel, n, blocksize);
}

void OpenClBackend::do_dequantize_4bit(const Buffer& packed, const Buffer& absmax, size_t n,
                                       int blocksize, Format4 format, Buffer& out,
                                       DType out_type) {
  std::lock_guard<std::mutex> lock(mutex_);
  const Table4& t = table4(format);
  const size_t per_item = dequantize_per_item();
  cl_kernel k = kernel("quantize", "dequantize_4bit", dequantize_options());
  set_args(k, packed, absmax, cl_ulong(n), cl_uint(log2_exact(size_t(blocksize))), *t.table, out,
           cl_int(out_type));
  launch(k, (n + per_item - 1) / per_item, 0);
}

bool OpenClBackend::gpu_layout() const {
  return block_layout_ == BlockLayout::EightPerItem ||
         (block_layout_ == BlockLayout::Auto && ctx_.info().is_gpu);
}

size_t OpenClBackend::dequantize_per_item() const { return gpu_layout() ? 4 : 1; }

std::string OpenClBackend::index_option(size_t count) const {
  return ctx_.info().narrow_indices && count < (size_t(1) << 31) ? " -DLB_IDX32=1" : "";
}

std::string OpenClBackend::dequantize_options() const {
  return "-DLB_DEQUANT_PER_ITEM=" + std::to_string(dequantize_per_item());
}

const OpenClBackend::BlockKernel& OpenClBackend::quantize_kernel(const char* name, int blocksize,
                                                                  const std::string& index) {
  const std::string key = std::string(name) + "/" + std::to_string(blocksize) + "/" +
                          std::to_string(int(block_layout_)) + index;
  auto it = quantize_kernels_.find(key);
  if (it != quantize_kernels_.end()) return it->second;
  BlockKernel q;
  LocalTables local;
  // 16 elements per item on GPUs: twice the update's loads in flight per item (the 8-bit
  // quantizer on the H100: 0.59 ms at 256M values, against 0.66 ms with 8 and 0.90 with 32).
  static_cast<BlockGeometry&>(q) =
      block_geometry(name, size_t(blocksize), 16,
                     [&](const std::string& options, size_t group) {
        // The 8-bit quantizer walks blocks and reads its code table from local memory on GPUs.
        const bool eight_bit = std::string(name) == "quantize_blockwise";
        local = local_tables(eight_bit ? kCodeTableWords * 4 : 0, group, 2 * sizeof(cl_uint));
        // The 4-bit quantizer copies its small table into local memory on GPUs (a group per few
        // blocks: it does not walk).
        if (!eight_bit && gpu_layout()) {
          local.options = " -DLB_LOCAL_TABLE4=1";
          local.bytes = kTable4Words * sizeof(cl_uint);
        }
        q.kernel = kernel("quantize", name, options + local.options + index);
        return group_size(q.kernel, group);
      });
  q.table_bytes = local.bytes;
  q.groups_per_unit = local.groups_per_unit;
  return quantize_kernels_.emplace(key, q).first->second;
}

void OpenClBackend::launch_blocks(const BlockGeometry& g, cl_kernel k, size_t n, int blocksize) {
  size_t groups = (num_blocks(n, blocksize) * g.lanes + g.group - 1) / g.group;
  if (g.groups_per_unit) groups = std::min(groups, g.groups_per_unit * ctx_.compute_units());
  launch(k, groups * g.group, g.group);
}

// ---- 4-bit matmul ----

// The WEIGHT_PARAMS block of a gemm_4bit.cl kernel, from argument `first` on.
void OpenClBackend::set_weight_args(cl_kernel k, cl_uint first, const Weight4bit& w) {
  set_arg(k, first, *w.packed);
  set_arg(k, first + 1, *w.absmax);
  // Without double quantization the nested buffers pass as null (OpenCL 1.2
  // accepts NULL buffer arguments).
  set_arg(k, first + 2, w.double_quant() ? w.nested_absmax : nullptr);
  set_arg(k, first + 3, w.double_quant() ? w.nested_code : nullptr);
  set_arg(k, first + 4, cl_int(w.double_quant()));
  set_arg(k, first + 5, cl_uint(log2_exact(size_t(w.nested_blocksize))));
  set_arg(k, first + 6, w.offset);
  set_arg(k, first + 7, cl_uint(log2_exact(size_t(w.blocksize))));
  set_arg(k, first + 8, *table4(w.format).table);
}

size_t OpenClBackend::gemm_tile() const {
  // t*t work-items per group: the largest t <= 16 the device allows.
  size_t tile = 16;
  while (tile > 1 && tile * tile > ctx_.max_work_group_size()) tile /= 2;
  return tile;
}

std::string OpenClBackend::gemm_options() const { return "-DTILE=" + std::to_string(gemm_tile()); }

namespace {

// The K split in [first, most] that loads the units most evenly: `tiles` * s groups take
// ceil(tiles * s / slots) turns of the `slots` groups the device holds at once, and each
// turn's groups take 1/s of K, so the time goes as turns / s. A larger s is kept only when
// at least 3% better, since each split adds partial sums to write and add.
size_t balanced_splits(size_t tiles, size_t first, size_t most, size_t slots) {
  const auto cost = [&](size_t s) { return double((tiles * s + slots - 1) / slots) / double(s); };
  size_t pick = first;
  for (size_t s = first + 1; s <= most; ++s)
    if (cost(s) < 0.97 * cost(pick)) pick = s;
  return pick;
}

}  // namespace

void OpenClBackend::launch_gemm(const Buffer& a, size_t m, size_t n, size_t k, bool transposed,
                                const Weight4bit& w, const Buffer* bias, Buffer& c, DType dtype) {
  // Three shape classes of gemm_4bit.cl's tiled kernel, 256 items per group (H200 through
  // NVIDIA's OpenCL, docs/PERFORMANCE.md): up to 32 rows, tiles of 16 x 256 (4 x 64 items of
  // 4 x 4 outputs), K split until about 8 groups per compute unit, since the weight streams
  // through few rows and wants many loads in flight; up to 128 rows, on GPUs 64 x 128 (below),
  // elsewhere 64 x 64 (16 x 16 items of 4 x 4), about 3 groups per unit (2026-12-06, batch 64:
  // 7-8% faster than 2 on 4096 x 4096 and 4096 x 14336, the same on 14336 x 4096; 1 and 4
  // slower); more, 128 x 128 (16 x 16 items of 8 x 8), split only where there is less than one
  // tile per unit (splits cost more than they give back there).
  struct Tiles {
    size_t wm, wn, tm, tn, groups_per_unit;
    size_t resident = 0;  // groups one unit holds at once, where the K split balances them
  };
  // The 16 x 256 and 128 x 128 classes need about 36 KiB of local memory (two buffers of a
  // 16-deep slice of each operand, the nested code table): devices with less (OpenCL promises
  // 32 KiB) take the 64 x 64 class, 18 KiB.
  const Tiles mid{16, 16, 4, 4, 3};
  // GPUs: up to 128 rows in 64 x 128 tiles (8 x 32 items of 8 x 4), at least 2 groups per
  // unit (2026-12-06, H100 through NVIDIA's OpenCL, batch 64: 19% faster than 64 x 64 on
  // 14336 x 4096, 5-6% on 4096 x 4096 and 4096 x 14336). A unit holds 3 of its groups at
  // once (80 registers x 256 items, by NVIDIA's compiler report, of 64 K; 26 KiB of local
  // memory), so the split is balanced over 3 per unit: on the H100, batch 64, 12 splits
  // instead of 9 for 4096 x 4096 and 4096 x 14336, 7 instead of 3 for 14336 x 4096: 11-23%
  // less time (2026-12-07, docs/PERFORMANCE.md).
  const Tiles mid_gpu{8, 32, 8, 4, 2, 3};
  Tiles t = m <= 32    ? Tiles{4, 64, 4, 4, 8}
            : m <= 128 ? (gpu_layout() ? mid_gpu : mid)
                       : Tiles{16, 16, 8, 8, 1};
  const auto local_bytes = [](const Tiles& c) {
    return (2 * 16 * (c.wm * c.tm + 4 + c.wn * c.tn + 4) + 256 + 16) * sizeof(float);
  };
  if (local_bytes(t) > ctx_.local_mem_size()) t = mid;
  const size_t bm = t.wm * t.tm, bn = t.wn * t.tn;
  const size_t tiles = (n + bn - 1) / bn * ((m + bm - 1) / bm);
  // Too few tiles for the groups wanted: split K among groups, each taking at least 256 of it,
  // and add their float sums in a second kernel.
  size_t splits = 1;
  const size_t units = ctx_.compute_units(), wanted = t.groups_per_unit * units;
  const size_t most = std::max<size_t>(1, k / 256);
  if (tiles < wanted) {
    splits = std::min((wanted + tiles - 1) / tiles, most);
    if (t.resident) splits = balanced_splits(tiles, splits, most, t.resident * units);
  }
  const size_t k_split = ((k + splits - 1) / splits + 15) / 16 * 16;  // whole K steps of 16
  splits = std::max<size_t>(1, (k + k_split - 1) / k_split);
  // The kernel's index arithmetic in 32 bits where the activations' and the weight's flat
  // indices stay below 2^31 (outputs and partial sums are addressed in 64 bits either way).
  const std::string options = "-DLB_WM=" + std::to_string(t.wm) + " -DLB_WN=" +
                              std::to_string(t.wn) + " -DLB_TM=" + std::to_string(t.tm) +
                              " -DLB_TN=" + std::to_string(t.tn) +
                              " -DLB_PREFETCH=" + std::to_string(int(gpu_layout())) +
                              index_option(std::max(m * k, w.numel()));
  cl_kernel kern = kernel("gemm_4bit", "gemm_4bit", options);
  LOWBIT_CHECK(group_size(kern, t.wm * t.wn) == t.wm * t.wn, "gemm_4bit: device ",
               ctx_.info().label, " does not run work-groups of ", t.wm * t.wn,
               " items for this kernel");
  Buffer* partial = splits > 1 ? &scratch(splits * m * n * sizeof(float)) : nullptr;
  set_args(kern, a, cl_int(dtype), cl_ulong(m), cl_ulong(n), cl_ulong(k), cl_int(transposed),
           cl_ulong(w.in_features));
  set_weight_args(kern, 7, w);
  set_arg(kern, 16, bias);
  set_arg(kern, 17, cl_int(bias != nullptr));
  set_arg(kern, 18, c);
  set_arg(kern, 19, cl_ulong(k_split));
  set_arg(kern, 20, partial);
  const size_t global[3] = {(n + bn - 1) / bn * t.wn, (m + bm - 1) / bm * t.wm, splits};
  const size_t local[3] = {t.wn, t.wm, 1};
  enqueue(kern, 3, global, local);
  if (!partial) return;
  cl_kernel reduce = kernel("gemm_4bit", "gemm_4bit_reduce");
  set_args(reduce, *partial, cl_uint(splits), cl_ulong(m), cl_ulong(n), bias,
           cl_int(bias != nullptr), cl_int(dtype), c);
  launch(reduce, m * n, 0);
}

void OpenClBackend::do_gemm_4bit(const Buffer& x, size_t m, const Weight4bit& w,
                                 const Buffer* bias, Buffer& y, DType dtype) {
  std::lock_guard<std::mutex> lock(mutex_);
  launch_gemm(x, m, w.out_features, w.in_features, true, w, bias, y, dtype);
}

void OpenClBackend::do_gemv_4bit(const Buffer& x, const Weight4bit& w, const Buffer* bias,
                                 Buffer& y, DType dtype) {
  std::lock_guard<std::mutex> lock(mutex_);
  // LB_GEMV_ROW_ITEMS (32) items per slot of LB_GEMV_ROWS rows, up to 8 slots per group. Two
  // rows per item: on the H200 14336x4096 takes 37 us against 54 with one and 34-39 with four.
  constexpr size_t kRowItems = 32, kRowsPerItem = 2;
  cl_kernel k = kernel("gemm_4bit", "gemv_4bit", "-DLB_GEMV_ROWS=" + std::to_string(kRowsPerItem));
  const size_t local = group_size(k, 8 * kRowItems);
  LOWBIT_CHECK(local >= kRowItems, "gemv_4bit on ", ctx_.info().label, " needs work-groups of ",
               kRowItems, " items; the kernel allows ", local);
  const size_t rows = local / kRowItems * kRowsPerItem;
  set_args(k, x, cl_int(dtype), cl_ulong(w.in_features), cl_ulong(w.out_features));
  set_weight_args(k, 4, w);
  set_arg(k, 13, bias);
  set_arg(k, 14, cl_int(bias != nullptr));
  set_arg(k, 15, y);
  set_arg(k, 16, LocalBytes{local * kRowsPerItem * sizeof(float)});
  set_arg(k, 17, LocalBytes{16 * sizeof(float)});
  launch(k, (w.out_features + rows - 1) / rows * local, local);
}

void OpenClBackend::do_gemm_4bit_input_grad(const Buffer& dy, size_t m, const Weight4bit& w,
                                            Buffer& dx, DType dtype) {
  std::lock_guard<std::mutex> lock(mutex_);
  launch_gemm(dy, m, w.in_features, w.out_features, false, w, nullptr, dx, dtype);
}

void OpenClBackend::do_gemm_int8(const Buffer& x, size_t m, const WeightInt8& w,
                                 const Buffer* bias, Buffer& y) {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t k = w.in_features, n = w.out_features;
  // The rows' codes and factors live only between the two kernels; OpenCL
  // keeps a released buffer until the commands that use it have finished.
  const std::unique_ptr<Buffer> codes = allocate(m * k);
  const std::unique_ptr<Buffer> row_factor = allocate(m * sizeof(float));
  cl_kernel q = kernel("gemm_int8", "quantize_rows_int8", gemm_options());
  const size_t local = group_size(q, 256);
  set_args(q, x, cl_ulong(k), *codes, *row_factor, LocalBytes{local * sizeof(float)},
           LocalBytes{local * sizeof(cl_int)});
  launch(q, m * local, local);
  const size_t tile = gemm_tile();
  cl_kernel g = kernel("gemm_int8", "gemm_int8", gemm_options());
  LOWBIT_CHECK(group_size(g, tile * tile) == tile * tile, "gemm_int8: device ", ctx_.info().label,
               " does not run ", tile, "x", tile, " work-groups for this kernel");
  set_args(g, *codes, *row_factor, cl_ulong(m), *w.codes, *w.scale, cl_ulong(n), cl_ulong(k), bias,
           cl_int(bias != nullptr), y);
  const size_t global[2] = {(n + tile - 1) / tile * tile, (m + tile - 1) / tile * tile};
  const size_t group[2] = {tile, tile};
  enqueue(g, 2, global, group);
}

Buffer& OpenClBackend::scratch(size_t bytes) {
  if (!scratch_ || scratch_->bytes() < bytes) scratch_ = allocate(std::max<size_t>(bytes, 4096));
  return *scratch_;
}

Buffer& OpenClBackend::chunk_sums(size_t nb) {
  const size_t chunks = std::max<size_t>(1, (nb + kBlocksPerChunk - 1) / kBlocksPerChunk);
  const size_t bytes = 2 * chunks * sizeof(double);
  if (!chunk_scratch_ || chunk_scratch_->bytes() < bytes)
    chunk_scratch_ = allocate(std::max<size_t>(bytes, 4096));
  return *chunk_scratch_;
}

OpenClBackend::BlockGeometry OpenClBackend::block_geometry(
    const char* op, size_t blocksize, size_t per_item,
    const std::function<size_t(const std::string&, size_t)>& build) {
  const size_t device_max = ctx_.max_work_group_size();
  // CPU devices (PoCL): a block per item (no barrier, loops the device
  // compiler vectorises), a few blocks per group. GPUs: `per_item` elements
  // per item, several blocks per group of up to 256.
  size_t lanes = 1, group = 8;
  if (gpu_layout()) {
    // At most 256 lanes (more elements per item for larger blocks): the tests then run the
    // 16-per-item form of the update on any device.
    lanes = std::min({std::max<size_t>(1, blocksize / per_item), device_max, size_t(256)});
    group = std::max(lanes, std::min<size_t>(256, device_max));
  }
  // A compiled kernel may allow fewer items per group than a block has lanes (NVIDIA: 256 for
  // the 512 lanes of a 4096-block): halve the lanes until a block fits (one lane per block,
  // the CPU layout, always does).
  for (;;) {
    BlockGeometry g;
    g.lanes = lanes;
    // NVIDIA: a block of at most 32 items lies in one warp, which finds its maxima by shuffles.
    const bool warp_max = ctx_.nv_compiler_options() && lanes > 1 && lanes <= 32;
    g.group = build(" -DLB_LANES=" + std::to_string(lanes) +
                        " -DLB_PER_ITEM=" + std::to_string(blocksize / lanes) +
                        (warp_max ? " -DLB_WARP_MAX=1" : ""),
                    group);
    if (g.group >= lanes) return g;
    LOWBIT_CHECK(lanes > 1, op, " on ", ctx_.info().label, ": block size ", blocksize,
                 " needs work-groups of ", lanes, " items but the kernel allows ", g.group);
    lanes /= 2;
  }
}

const OpenClBackend::UpdateKernel& OpenClBackend::update_kernel(const OptimizerOperands& op) {
  const std::string rule = "-DLB_RULE=" + std::to_string(int(op.rule)) + " -DLB_PARAM_TYPE=" +
                           std::to_string(int(op.param_type)) + " -DLB_QUANTIZED=" +
                           std::to_string(op.quantized) +
                           " -DLB_TWO_STATES=" + std::to_string(op.state2 != nullptr);
  const std::string key =
      rule + "/" + std::to_string(op.blocksize) + "/" + std::to_string(int(block_layout_));
  auto it = update_kernels_.find(key);
  if (it != update_kernels_.end()) return it->second;
  // 64-bit index arithmetic (no index_option): with 32-bit indices NVIDIA's compiler spilled
  // 8 bytes under the update's 64-register cap, and AdamW8bit's update at 256M took 1.69-1.71
  // ms against 1.64-1.65 (H100, 2026-12-07), where the quantizers gained 3-7%.
  UpdateKernel u;
  LocalTables local;
  static_cast<BlockGeometry&>(u) = block_geometry(
      "optimizer_update", size_t(op.blocksize), 8, [&](const std::string& options, size_t group) {
        local = local_tables(op.quantized ? (op.state2 ? 2 : 1) * kCodeTableWords * 4 : 0,
                             group, 2 * 2 * sizeof(float));
        const std::string all = rule + options + local.options;
        u.kernel = kernel("optimizer", "optimizer_update", all);
        u.norms = kernel("optimizer", "optimizer_update_norms_fused", all);
        return std::min(group_size(u.kernel, group), group_size(u.norms, group));
      });
  u.table_bytes = local.bytes;
  u.groups_per_unit = local.groups_per_unit;
  return update_kernels_.emplace(key, u).first->second;
}

OpenClBackend::LocalTables OpenClBackend::local_tables(size_t tables, size_t group,
                                                       size_t per_item) const {
  if (!gpu_layout() || tables == 0 || tables + group * per_item > ctx_.local_mem_size())
    return {};
  // Groups that walk blocks do equal work, so the launch should hold about as many as run at
  // once. NVIDIA's compiler can be held to 64 registers, four groups of 256 per SM (as the CUDA
  // update runs); elsewhere residency is unknown, and 16 groups per unit keep the last wave's
  // share small.
  if (ctx_.nv_compiler_options())
    return {" -DLB_LOCAL_TABLES=1 -cl-nv-maxrregcount=64", tables, 4};
  return {" -DLB_LOCAL_TABLES=1", tables, 16};
}

void OpenClBackend::set_block_layout(BlockLayout layout) {
  std::lock_guard<std::mutex> lock(mutex_);
  block_layout_ = layout;
}

Buffer& OpenClBackend::code_table_buffer(int which) {
  std::unique_ptr<Buffer>& table = code_tables_[which];
  if (!table) table = allocate(size_t(kCodeTableWords) * sizeof(uint32_t));
  return *table;
}

const Buffer& OpenClBackend::code_table(const Buffer& qmap, int which) {
  Buffer& table = code_table_buffer(which);
  // Wrapped host memory is up to date for the host here: every op that hands a wrapped buffer
  // to a kernel waits for it (finish_host_access).
  std::vector<unsigned char>& source = table_sources_[which];
  const auto* host = static_cast<const unsigned char*>(static_cast<const ClBuffer&>(qmap).host());
  if (host && source.size() == qmap.bytes() && std::equal(source.begin(), source.end(), host))
    return table;
  source.clear();  // until the build below is queued
  cl_kernel k = kernel("step", "build_code_table");
  const size_t local = group_size(k, 256);
  set_args(k, qmap, table, LocalBytes{256 * sizeof(float)}, LocalBytes{sizeof(cl_uint)});
  launch(k, local, local);
  if (host) source.assign(host, host + qmap.bytes());
  return table;
}

Buffer& OpenClBackend::rejected_counter() {
  if (!rejected_) {
    // Kept only once zeroed: a failed write leaves no counter holding garbage.
    std::unique_ptr<Buffer> counter = allocate(sizeof(cl_uint));
    const cl_uint zero = 0;
    write(*counter, &zero, sizeof(zero), 0);
    rejected_ = std::move(counter);
  }
  return *rejected_;
}

void OpenClBackend::ready_optimizer_update(const OptimizerOperands& op, bool norms) {
  std::lock_guard<std::mutex> lock(mutex_);
  update_kernel(op);
  rejected_counter();
  kernel("step", "add_rejected");
  if (op.quantized) {
    code_table_buffer(0);
    if (op.state2) code_table_buffer(1);
  }
  kernel("step", "build_code_table");
  if (!norms) return;
  const size_t nb = num_blocks(op.n, op.blocksize);
  scratch(2 * nb * sizeof(float));
  if (ctx_.has_fp64()) {
    chunk_sums(nb);
    kernel("reduce", "sum_block_chunks");
    kernel("reduce", "sums_into_slot");
  }
}

namespace {

constexpr size_t slot_offset(size_t slot) { return slot * sizeof(StepSlot); }

}  // namespace

void OpenClBackend::do_optimizer_update(const OptimizerOperands& op, const Buffer& slots,
                                        size_t slot, Buffer& flags) {
  std::lock_guard<std::mutex> lock(mutex_);
  const Buffer* table1 = op.quantized ? &code_table(*op.qmap1, 0) : nullptr;
  const Buffer* table2 = op.quantized && op.state2 ? &code_table(*op.qmap2, 1) : nullptr;
  const UpdateKernel& u = update_kernel(op);
  Buffer& rejected = rejected_counter();
  set_args(u.kernel, slots, cl_ulong(slot_offset(slot) + offsetof(StepSlot, args)), flags,
           cl_ulong(op.n), cl_uint(op.blocksize), op.param, op.grad, op.state1, op.absmax1, table1,
           op.state2, op.absmax2, table2, rejected, LocalBytes{2 * u.group * 2 * sizeof(float)},
           tables_arg(u));
  launch_blocks(u, u.kernel, op.n, op.blocksize);
  cl_kernel add = kernel("step", "add_rejected");
  set_args(add, rejected, flags, cl_uint(offsetof(StepFlags, skipped_blocks) / sizeof(cl_ulong)));
  launch(add, 1, 1);
}

void OpenClBackend::do_optimizer_update_norms(const OptimizerOperands& op, Buffer& slots,
                                              size_t slot, const Buffer& flags) {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t nb = num_blocks(op.n, op.blocksize);
  Buffer& partial = scratch(std::max<size_t>(1, 2 * nb) * sizeof(float));
  if (nb > 0) {
    const Buffer* table1 = op.quantized ? &code_table(*op.qmap1, 0) : nullptr;
    const Buffer* table2 = op.quantized && op.state2 ? &code_table(*op.qmap2, 1) : nullptr;
    const UpdateKernel& u = update_kernel(op);
    set_args(u.norms, slots, cl_ulong(slot_offset(slot) + offsetof(StepSlot, args)), flags,
             cl_ulong(op.n), cl_uint(op.blocksize), op.param, op.grad, op.state1, op.absmax1,
             table1, op.state2, op.absmax2, table2, partial,
             LocalBytes{2 * u.group * 2 * sizeof(float)}, tables_arg(u));
    launch_blocks(u, u.norms, op.n, op.blocksize);
  }
  sums_into_slot(partial, nb, 2, slots, slot, offsetof(StepSlot, update_sq),
                 offsetof(StepSlot, param_sq), &flags);
}

void OpenClBackend::do_gradient_stats(const Buffer& grad, DType grad_type, size_t n,
                                      int blocksize, Buffer& slots, size_t slot,
                                      bool /*sum: always computed*/) {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t nb = num_blocks(n, blocksize);
  Buffer& partial = scratch(std::max<size_t>(1, nb) * sizeof(float));
  if (nb == 0) {
    // Nothing to launch over; the sums below are zeros.
  } else if (!gpu_layout()) {
    // CPU devices: a block per item, in loops their compiler vectorises.
    cl_kernel k = kernel("optimizer", "gradient_stats_by_block");
    const size_t local = group_size(k, 8);
    set_args(k, grad, cl_int(grad_type), cl_ulong(n), cl_uint(blocksize), partial);
    launch(k, (nb + local - 1) / local * local, local);
  } else {
    cl_kernel k = kernel("optimizer", "gradient_stats", index_option(n));
    // 4 items per block (four lanes each), 64 blocks per group where allowed.
    const size_t local = group_size(k, 256);
    LOWBIT_CHECK(local >= 4, "gradient_stats on ", ctx_.info().label,
                 " needs work-groups of 4 items; the kernel allows ", local);
    set_args(k, grad, cl_int(grad_type), cl_ulong(n), cl_uint(blocksize), partial,
             LocalBytes{4 * local * sizeof(float)});
    launch(k, (nb * 4 + local - 1) / local * local, local);
  }
  sums_into_slot(partial, nb, 1, slots, slot, offsetof(StepSlot, grad_sq),
                 offsetof(StepSlot, grad_nonfinite), nullptr);
}

void OpenClBackend::sums_into_slot(const Buffer& partial, size_t nb, unsigned width, Buffer& slots,
                                   size_t slot, size_t first, size_t second,
                                   const Buffer* flags) {
  const size_t chunks = (nb + kBlocksPerChunk - 1) / kBlocksPerChunk;
  if (ctx_.has_fp64()) {
    // Chunks in parallel, then one work-group adds them in order into the slot.
    Buffer& sums = chunk_sums(nb);
    if (chunks > 0) {
      cl_kernel k = kernel("reduce", "sum_block_chunks");
      set_args(k, partial, cl_ulong(nb), cl_uint(width), sums);
      const size_t local = group_size(k, 64);
      launch(k, (chunks + local - 1) / local * local, local);
    }
    cl_kernel k = kernel("reduce", "sums_into_slot");
    const size_t local = group_size(k, 256);
    set_args(k, sums, cl_ulong(chunks), cl_uint(width), flags, cl_int(flags != nullptr), slots,
             cl_ulong(slot_offset(slot) + first), cl_ulong(slot_offset(slot) + second),
             LocalBytes{2 * local * sizeof(double)});
    launch(k, local, local);
    return;
  }
  // No double precision on the device: the host adds the blocks' sums, in the same order.
  StepFlags f{};
  if (flags) read(*flags, &f, sizeof(f), 0);
  if (f.found_inf) return;
  std::vector<float> host(width * nb);
  read(partial, host.data(), host.size() * sizeof(float), 0);
  double x = 0.0, y = 0.0;
  for (size_t c = 0; c < chunks; ++c) {
    double cx = 0.0, cy = 0.0;
    for (size_t b = c * kBlocksPerChunk; b < std::min(nb, (c + 1) * kBlocksPerChunk); ++b) {
      const float v = host[width * b];
      cx += v;
      cy += width == 2 ? double(host[2 * b + 1]) : (std::isfinite(v) ? 0 : 1);
    }
    x += cx;
    y += cy;
  }
  StepSlot s;
  read(slots, &s, sizeof(s), slot_offset(slot));
  auto* bytes = reinterpret_cast<unsigned char*>(&s);
  std::memcpy(bytes + first, &x, sizeof(x));
  if (width == 2) {
    std::memcpy(bytes + second, &y, sizeof(y));
  } else {
    const uint32_t bad = y != 0.0 ? 1 : 0;
    std::memcpy(bytes + second, &bad, sizeof(bad));
  }
  write(slots, &s, sizeof(s), slot_offset(slot));
}

}  // namespace lowbit::kernels::opencl
