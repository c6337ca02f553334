// The kernels contract: one abstract Backend whose ops have the same semantics
// on every implementation (CPU: OpenMP + vectorised loops; OpenCL: embedded
// .cl programs; CUDA: kernels on device memory, where built), plus the buffers
// they work on and the registry that picks a backend for where memory lives.
// Torch-free: everything here is raw bytes, element counts and plain structs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/codebook.h"
#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/optimizer_rules.h"
#include "kernels/step_rules.h"

namespace lowbit::kernels {

class Backend;

// Memory owned by (or lent to) one backend. Every op checks that the buffers it
// is given belong to the backend it runs on and are large enough.
class Buffer {
 public:
  virtual ~Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  size_t bytes() const { return bytes_; }
  const Backend* owner() const { return owner_; }

 protected:
  Buffer(const Backend* owner, size_t bytes) : owner_(owner), bytes_(bytes) {}

 private:
  const Backend* owner_;
  size_t bytes_;
};

enum class BackendKind { CPU, OpenCL, CUDA };

// Where memory lives: host memory, or the memory of CUDA device `index`.
struct Location {
  enum class Type : uint8_t { Host, Cuda };
  Type type = Type::Host;
  int index = 0;

  static Location host() { return {}; }
  static Location cuda(int device) { return {Type::Cuda, device}; }
  bool is_host() const { return type == Type::Host; }
  bool operator==(const Location& o) const {
    return type == o.type && (type == Type::Host || index == o.index);
  }
  bool operator!=(const Location& o) const { return !(*this == o); }
};

// "cpu" or "cuda:<index>".
std::string location_name(const Location& where);

// Stochastic rounding for 8-bit quantization: a value between two codes rounds
// up with probability equal to its distance from the lower code over the gap.
// The random number of element i is a hash of (seed, i), identical on every
// backend, so a seeded run is reproducible and backends agree.
struct StochasticRounding {
  bool enabled = false;
  uint64_t seed = 0;
};

// Block sizes the kernels accept (powers of two).
constexpr int kMinBlocksize8bit = 64;
constexpr int kMinBlocksize4bit = 32;
constexpr int kMaxBlocksize = 4096;

inline size_t num_blocks(size_t n, int blocksize) { return (n + size_t(blocksize) - 1) / size_t(blocksize); }
// log2 of a power of two (the block sizes).
inline int log2_exact(size_t v) {
  int s = 0;
  while ((size_t(1) << s) < v) ++s;
  return s;
}
inline size_t packed_4bit_bytes(size_t n) { return (n + 1) / 2; }
// The gradient check without sums: no block's float sum of squares can overflow while every
// |g| < 2^e with 2e + log2(blocksize) <= 127 (each square is below 2^(2e), a block's sum below
// 2^127 < FLT_MAX). Returns the bits of that 2^e: a largest |g| below it decides alone.
inline uint32_t gradient_check_limit_bits(int blocksize) {
  const int e = (127 - log2_exact(size_t(blocksize))) / 2;
  return uint32_t(127 + e) << 23;
}

// A frozen 4-bit weight W [out_features, in_features] as quantize_4bit lays it
// out (bitsandbytes' layout): element (o, i) is flat index o*in_features + i,
// so blocks run along the flattened weight and may straddle rows. `absmax` is
// float32 [num_blocks], or under double quantization (nested_absmax set) uint8
// codes of `nested_code` (256 floats) with one float32 nested absmax per
// `nested_blocksize` blocks: absmax[b] = nested_code[codes[b]] *
// nested_absmax[b / nested_blocksize] + offset, the float operations of
// dequantize_blockwise, so the scales equal quant::dequantize_absmax's.
struct Weight4bit {
  const Buffer* packed = nullptr;
  const Buffer* absmax = nullptr;
  size_t out_features = 0;
  size_t in_features = 0;
  int blocksize = 64;
  Format4 format = Format4::NF4;
  const Buffer* nested_absmax = nullptr;
  const Buffer* nested_code = nullptr;
  int nested_blocksize = 256;
  float offset = 0.0f;

  size_t numel() const { return out_features * in_features; }
  bool double_quant() const { return nested_absmax != nullptr; }
};

// A frozen int8 weight W [out_features, in_features] in bitsandbytes'
// Int8Params layout (LLM.int8(), Dettmers et al. 2022): `codes` int8,
// row-major, each row quantized by its absmax (bitsandbytes writes codes in
// [-127, 127]; -128 computes correctly too); `scale` float32 [out_features],
// bitsandbytes' SCB (the row absmax, so W[o, i] ~ codes[o, i] * scale[o] /
// 127). `row_sums` int32 [out_features]
// holds sum_i codes[o, i], computed once when the weight is bound: the CPU's
// VNNI dot product multiplies unsigned by signed bytes, so it shifts x by
// +128 and takes 128 * row_sums[o] back off.
struct WeightInt8 {
  const Buffer* codes = nullptr;
  const Buffer* scale = nullptr;
  const Buffer* row_sums = nullptr;
  size_t out_features = 0;
  size_t in_features = 0;
};

// 1 / 127^2: an int8 product of two absmax-scaled codes back to the scales'
// units (bitsandbytes' MM_DEQUANT_CONST).
constexpr float kInt8Dequant = 1.0f / 16129.0f;
// Dot products of this many int8 pairs (x codes in [-127, 127]) always fit
// in int32: 2^31 / (127 * 128) > 2^17.
constexpr size_t kMaxInt8InFeatures = size_t(1) << 17;

// ---- optimizers: types of the optimizer ops below ----

// The per-element rules of kernels/optimizer_rules.h (values are LB_RULE_*).
enum class OptimizerRule : uint8_t { Adam = 0, LAMB = 1, Lion = 2, RMSprop = 3 };

const char* optimizer_rule_name(OptimizerRule rule);

// Hyper-parameters of one step (fields documented in optimizer_rules.h).
using OptimizerArgs = lb_optim_args;

// An optimizer step decided on the backend (kernels/step_rules.h): the
// whole-tensor sums, the skip decision and the step arguments stay in the
// backend's memory, so a device backend never waits for the host, nor the host
// for the device. One StepSlot per parameter (an array in one buffer), one
// StepFlags per optimizer.
using StepHparams = lb_step_hparams;
using StepSlot = lb_step_slot;
using StepFlags = lb_step_flags;
constexpr int kGnormHistory = LB_GNORM_HISTORY;

// A parameter's part of optimizer_prepare / optimizer_scale.
struct StepItem {
  size_t slot = 0;
  StepHparams hparams{};
  // int64: the parameter's step count, incremented by optimizer_prepare unless
  // the step is skipped.
  Buffer* step = nullptr;
  // float[kGnormHistory]: the squared gradient norms of percentile clipping;
  // required when hparams.percentile < 100.
  Buffer* history = nullptr;
  // gradient_stats wrote this step's grad_sq and grad_nonfinite into the slot.
  bool checked = false;
};

// The operands of one optimizer step over `n` elements. The gradient has the
// parameter's dtype. States are 8-bit codes of `qmap1` / `qmap2` (256 sorted
// floats) with one float32 absmax per block of `blocksize` when `quantized`,
// else float32 arrays (absmax and qmap unused). state2 is required by Adam and
// LAMB, optional for RMSprop (its momentum buffer), absent for Lion. Blocks
// are also the unit of the non-finite guard and of the norm partial sums.
struct OptimizerOperands {
  OptimizerRule rule = OptimizerRule::Adam;
  size_t n = 0;
  Buffer* param = nullptr;
  DType param_type = DType::F32;
  const Buffer* grad = nullptr;
  bool quantized = true;
  int blocksize = 256;
  Buffer* state1 = nullptr;
  Buffer* absmax1 = nullptr;
  const Buffer* qmap1 = nullptr;
  Buffer* state2 = nullptr;
  Buffer* absmax2 = nullptr;
  const Buffer* qmap2 = nullptr;
};

// Sums over a tensor, accumulated in a fixed order, so a result does not
// depend on the thread count. CPU and CUDA use the same order and agree bit for
// bit: per block, sixteen float lanes (lane k takes elements k, k + 16, ...)
// added in lane order; blocks in chunks of 256, each chunk summed in double in
// block order; the chunks in double in order. OpenCL sums the gradient in
// that order too; its norms sum each block as a work-group tree (agreeing to
// float rounding), then in double in block order.
struct UpdateNorms {
  double update_sq = 0;  // sum of u^2 (u: the rule's update direction)
  double param_sq = 0;   // sum of p^2 before the step
};

struct GradientStats {
  double sum_sq = 0;  // sum of g^2
  // False when an element is NaN or infinite, or a block's sum of squares
  // overflows float32 (|g| beyond ~1e18: the squared state would overflow).
  bool finite = true;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual BackendKind kind() const = 0;
  // "cpu", "opencl:<platform>/<device>" or "cuda:<index>".
  virtual std::string name() const = 0;

  // ---- memory ----
  virtual std::unique_ptr<Buffer> allocate(size_t bytes) = 0;
  // Memory at `where` used in place, without a copy, where the backend can
  // address it (CPU: host memory; CUDA: its own device's memory; OpenCL: host
  // memory on a device that shares it). Returns nullptr where it cannot:
  // callers then allocate and copy.
  virtual std::unique_ptr<Buffer> wrap(void* data, size_t bytes, Location where);
  // Host <-> buffer copies. On a device the host waits for them, and for the
  // ops queued before them.
  virtual void write(Buffer& dst, const void* src, size_t bytes, size_t offset = 0) = 0;
  virtual void read(const Buffer& src, void* dst, size_t bytes, size_t offset = 0) = 0;
  // Several whole-buffer copies at once, in order: a device backend queues them all and waits
  // once (the default copies one after another). A write_all that throws may have done any of
  // its writes; a read_all that throws changed nothing but the host memory.
  struct HostRead {
    const Buffer* src;
    void* dst;
    size_t bytes;
  };
  struct HostWrite {
    Buffer* dst;
    const void* src;
    size_t bytes;
  };
  virtual void read_all(const std::vector<HostRead>& reads);
  virtual void write_all(const std::vector<HostWrite>& writes);
  // dst[0, bytes) = src[0, bytes), both buffers of this backend (the roofline
  // the benchmarks compare against: a device-to-device copy).
  void copy(const Buffer& src, Buffer& dst, size_t bytes);
  // Waits until every queued op has finished (a no-op on CPU).
  virtual void synchronize() {}

  // ---- 8-bit blockwise (codebook of 256 ascending floats in [-1, 1]) ----
  // absmax[b] = max |x| over block b (blocks of `blocksize`, the last may be
  // short); codes[i] = position of the nearest codebook entry to x[i]/absmax[b]
  // (a value exactly halfway takes the lower entry); an all-zero block gets the
  // entry of smallest magnitude. Non-finite input (kernels/shared_math.h,
  // lb_absmax_scales): absmax is NaN for a block holding a NaN, else inf for
  // one holding an inf, and such a block stores the zero code throughout, so
  // it dequantizes to NaN in every element; the same bits on every backend.
  void quantize_blockwise(const Buffer& x, DType x_type, size_t n, int blocksize,
                          const Buffer& code, Buffer& absmax, Buffer& codes,
                          const StochasticRounding& rounding = {});
  // out[i] = code[codes[i]] * absmax[b] + offset, rounded to out_type.
  void dequantize_blockwise(const Buffer& codes, const Buffer& absmax, const Buffer& code,
                            size_t n, int blocksize, Buffer& out, DType out_type,
                            float offset = 0.0f);

  // ---- 4-bit NF4 / FP4 ----
  // absmax as above; two codes per byte, element 2j in the high nibble, an odd
  // tail padded with the code of +0.
  void quantize_4bit(const Buffer& x, DType x_type, size_t n, int blocksize, Format4 format,
                     Buffer& absmax, Buffer& packed);
  void dequantize_4bit(const Buffer& packed, const Buffer& absmax, size_t n, int blocksize,
                       Format4 format, Buffer& out, DType out_type);

  // ---- 4-bit matmul (frozen NF4 / FP4 weights, QLoRA) ----
  // x, bias, y, dy and dx share `dtype`: F32, F16 or BF16. Products
  // accumulate in float32 and each output is rounded to `dtype` once.
  // Summation order differs between backends, so results agree to float
  // rounding, not bit for bit. W is decoded a tile at a time (CPU, OpenCL); on
  // CUDA with F16 / BF16 the decoded weight may also be rounded to `dtype`
  // (bitsandbytes' arrangement): for the tensor cores (small m), and where W is
  // dequantized into a temporary for a cuBLAS GEMM (large m, odd shapes).
  // y[m, out] = x[m, in] * dequant(W)^T (+ bias[out] when bias is given);
  // m = 1 runs gemv_4bit's kernel.
  void gemm_4bit(const Buffer& x, size_t m, const Weight4bit& w, const Buffer* bias, Buffer& y,
                 DType dtype);
  // The m = 1 case (one token): a memory-bound pass over the packed codes.
  void gemv_4bit(const Buffer& x, const Weight4bit& w, const Buffer* bias, Buffer& y, DType dtype);
  // gemv_4bit approximately, for generation and evaluation (training keeps
  // gemv_4bit): the x values under each weight block are rounded to int8 codes
  // on a scale of their own, s_x = max |x| / 127 over the block, and the
  // format's 16 values to int8 on one scale, u = max |value| / 127; each
  // block's dot product is exact in integers, then scaled by absmax * u * s_x.
  // Per block, against the exact product, the error is at most
  //   absmax * (u / 2 * sum |x| + max |value| * (1 + 1 / 254) * s_x / 2 * blocksize)
  // plus float rounding. A block of x holding inf or NaN makes its rows NaN.
  // Where there is no such path gemv_4bit runs (exact; inf in x gives inf or
  // NaN rows): OpenCL, CUDA, CPUs without AVX2, and blocks that are not a
  // multiple of 64 values or rows that do not hold whole blocks.
  void gemv_4bit_int8(const Buffer& x, const Weight4bit& w, const Buffer* bias, Buffer& y,
                      DType dtype);
  // dx[m, in] = dy[m, out] * dequant(W): the input gradient of gemm_4bit (W is
  // frozen, so there is no weight gradient).
  void gemm_4bit_input_grad(const Buffer& dy, size_t m, const Weight4bit& w, Buffer& dx,
                            DType dtype);

  // ---- int8 matmul (LLM.int8() vector-wise quantization) ----
  // y[m, out] = x[m, in] * W^T (+ bias), all float32. Each row r of x is
  // quantized on the fly by its absmax a_r: c = round-half-even(x * (127 / a_r))
  // (float product; a row of zeros gives codes 0), the codes multiply W's in
  // int32 without rounding, and
  //   y[r, o] = float(acc) * (a_r * kInt8Dequant) * scale[o]  (+ bias[o]),
  // each product rounded to float in that order. A row holding inf or NaN
  // gives a row of NaN. Every backend gives the same bits (the integer sums
  // are exact, the epilogue is fixed). LLM.int8()'s outlier columns
  // are the caller's: it zeroes them in x and adds their float product.
  void gemm_int8(const Buffer& x, size_t m, const WeightInt8& w, const Buffer* bias, Buffer& y);

  // ---- optimizers ----
  // A step of one optimizer over its parameters, in the order the optimizer
  // calls these (the `slots` buffer holds StepSlot[count], `flags` one StepFlags):
  //   gradient_stats    per parameter whose gradient is checked;
  //   optimizer_prepare once, over every parameter;
  //   optimizer_update_norms, then optimizer_scale, for rules that need norms;
  //   optimizer_update  per parameter.
  // On a device backend every one is queued without a host round trip.

  // slots[slot].grad_sq = sum of g^2 and grad_nonfinite = whether g holds NaN
  // or inf (or a block's float sum of squares overflows: |g| beyond ~1e18,
  // whose square would overflow a state). With `sum` false only
  // grad_nonfinite is wanted (the same decision) and grad_sq may be left 0:
  // a device backend then reads the gradient once at memory speed.
  void gradient_stats(const Buffer& grad, DType grad_type, size_t n, int blocksize, Buffer& slots,
                      size_t slot, bool sum = true);
  // flags.found_inf = (skip_nonfinite and some checked item's gradient is not
  // finite). If set, skipped_steps += 1 and nothing else changes. Otherwise,
  // per item: step += 1; args = lb_step_args(hparams, step, 1) with
  // gnorm_scale = percentile clipping's scale (history updated) when
  // hparams.percentile < 100 and the gradient was checked and finite.
  // Throws NothingChanged if it failed and undid its changes (the host-side
  // form writes one buffer after another; a device backend runs one kernel).
  void optimizer_prepare(const std::vector<StepItem>& items, bool skip_nonfinite, Buffer& slots,
                         Buffer& flags);
  // slots[slot].update_sq / param_sq for the step slots[slot].args describes
  // (nothing is written to the operands); nothing when flags.found_inf.
  void optimizer_update_norms(const OptimizerOperands& op, Buffer& slots, size_t slot,
                              const Buffer& flags);
  // Per item needing norms (lb_needs_norms): args rescaled by lb_norm_scale
  // (gnorm_scale kept); nothing when flags.found_inf.
  void optimizer_scale(const std::vector<StepItem>& items, Buffer& slots, const Buffer& flags);
  // One fused step with slots[slot].args (bitsandbytes'
  // optimizer_update_8bit_blockwise / _32bit): per block, dequantize the
  // states with the block's absmax, apply the rule, write the parameter,
  // requantize the states with a fresh absmax m: code = nearest qmap entry to
  // s * (1/m) (bitsandbytes' optimizer kernels also multiply by the
  // reciprocal; quantize_blockwise divides), ties low; an all-zero block takes
  // the qmap entry of smallest magnitude. A block whose new parameter or
  // states would not be finite is left unchanged and counted in
  // flags.skipped_blocks. Nothing when flags.found_inf.
  void optimizer_update(const OptimizerOperands& op, const Buffer& slots, size_t slot,
                        Buffer& flags);
  // Builds and allocates what optimizer_update (and, with `norms`,
  // optimizer_update_norms) will need for operands of this kind, so that a
  // step fails here, before optimizer_prepare changes anything, rather than
  // between two parameters' updates. The OpenCL backend builds each kernel
  // variant (rule, dtype, 8/32-bit, one or two states, block size) at its
  // first use; the CPU and CUDA backends build nothing lazily (a no-op).
  virtual void ready_optimizer_update(const OptimizerOperands& /*op*/, bool /*norms*/) {}

  // The same ops for one parameter with host-side arguments and results (tests,
  // benchmarks): they allocate a slot and flags, and wait for the result.
  // Returns the number of blocks left unchanged.
  size_t optimizer_update(const OptimizerOperands& op, const OptimizerArgs& args);
  UpdateNorms optimizer_update_norms(const OptimizerOperands& op, const OptimizerArgs& args);
  GradientStats gradient_stats(const Buffer& grad, DType grad_type, size_t n, int blocksize,
                               bool sum = true);

 protected:
  virtual void do_copy(const Buffer& src, Buffer& dst, size_t bytes) = 0;
  virtual void do_quantize_blockwise(const Buffer& x, DType x_type, size_t n, int blocksize,
                                     const Buffer& code, Buffer& absmax, Buffer& codes,
                                     const StochasticRounding& rounding) = 0;
  virtual void do_dequantize_blockwise(const Buffer& codes, const Buffer& absmax,
                                       const Buffer& code, size_t n, int blocksize, Buffer& out,
                                       DType out_type, float offset) = 0;
  virtual void do_quantize_4bit(const Buffer& x, DType x_type, size_t n, int blocksize,
                                Format4 format, Buffer& absmax, Buffer& packed) = 0;
  virtual void do_dequantize_4bit(const Buffer& packed, const Buffer& absmax, size_t n,
                                  int blocksize, Format4 format, Buffer& out, DType out_type) = 0;
  virtual void do_gemm_4bit(const Buffer& x, size_t m, const Weight4bit& w, const Buffer* bias,
                            Buffer& y, DType dtype) = 0;
  virtual void do_gemv_4bit(const Buffer& x, const Weight4bit& w, const Buffer* bias, Buffer& y,
                            DType dtype) = 0;
  virtual void do_gemm_4bit_input_grad(const Buffer& dy, size_t m, const Weight4bit& w,
                                       Buffer& dx, DType dtype) = 0;
  virtual void do_gemv_4bit_int8(const Buffer& x, const Weight4bit& w, const Buffer* bias,
                                 Buffer& y, DType dtype) {
    do_gemv_4bit(x, w, bias, y, dtype);
  }
  virtual void do_gemm_int8(const Buffer& x, size_t m, const WeightInt8& w, const Buffer* bias,
                            Buffer& y) = 0;

  virtual void do_gradient_stats(const Buffer& grad, DType grad_type, size_t n, int blocksize,
                                 Buffer& slots, size_t slot, bool sum) = 0;
  virtual void do_optimizer_update_norms(const OptimizerOperands& op, Buffer& slots, size_t slot,
                                         const Buffer& flags) = 0;
  virtual void do_optimizer_update(const OptimizerOperands& op, const Buffer& slots, size_t slot,
                                   Buffer& flags) = 0;
  // On the host by default, through read_all() and write_all(): backends whose
  // memory the host reaches (CPU), and OpenCL, where each costs two waits (one
  // batch of reads, one of writes), however many parameters the step has.
  virtual void do_optimizer_prepare(const std::vector<StepItem>& items, bool skip_nonfinite,
                                    Buffer& slots, Buffer& flags);
  virtual void do_optimizer_scale(const std::vector<StepItem>& items, Buffer& slots,
                                  const Buffer& flags);

  // Throws unless `b` belongs to this backend and holds at least `bytes`.
  void check_buffer(const Buffer& b, size_t bytes, const char* op, const char* what) const;
  // Throws unless `b` belongs here and [offset, offset + bytes) lies inside it
  // (read and write).
  void check_range(const Buffer& b, size_t bytes, size_t offset, const char* op,
                   const char* what) const;
  // Throws unless the weight's buffers belong here and match its shape.
  void check_weight4bit(const Weight4bit& w, const char* op) const;
  // The arguments of a 4-bit matmul forward of m rows (gemm_4bit, gemv_4bit, gemv_4bit_int8).
  void check_matmul_4bit(const Buffer& x, size_t m, const Weight4bit& w, const Buffer* bias,
                         const Buffer& y, DType dtype, const char* op) const;

 private:
  void check_optimizer_operands(const OptimizerOperands& op, const char* name) const;
  void check_step_buffers(const Buffer& slots, size_t slot, const Buffer* flags,
                          const char* op) const;
  void check_items(const std::vector<StepItem>& items, const Buffer& slots, const Buffer& flags,
                   const char* op) const;
};

// Which backend to use: "auto" (an OpenCL GPU that shares the host's memory,
// i.e. an integrated one, if present, else the CPU: a discrete GPU only when
// asked for, see opencl::auto_selectable),
// "cpu", "opencl" or "cuda"; for OpenCL an optional device index (as listed by
// opencl_devices()) or a case-insensitive substring of "<platform>/<device>";
// for CUDA the device index (default 0).
struct BackendOptions {
  std::string kind = "auto";
  int device_index = -1;
  std::string device_name;
};

// The process-wide CPU backend.
Backend& cpu_backend();

// A backend per the options. OpenCL and CUDA backends are shared per device,
// so each device's context, programs and handles are created once per process.
std::shared_ptr<Backend> make_backend(const BackendOptions& options = {});

// make_backend's choice with the reason for it, one line for a run's header
// (e.g. "auto: no OpenCL GPU shares host memory (found: ...)").
struct BackendChoice {
  std::shared_ptr<Backend> backend;
  std::string reason;
};
BackendChoice choose_backend(const BackendOptions& options = {});

// The backend that runs ops on memory at `where`: the CPU for host memory, the
// CUDA backend of that device for CUDA memory (an error naming what is
// missing when this build or machine has no CUDA).
std::shared_ptr<Backend> backend_for(Location where);

// Whether this build has the CUDA backend, and the CUDA devices it sees (0
// without the backend or a driver).
bool cuda_built();
int cuda_device_count();

// The stream a CUDA device's ops are queued on, as a cudaStream_t: the torch
// layer installs libtorch's current stream of the device, so that lowbit's
// kernels order with the user's own work. Without a provider, the default
// stream. The provider is called on every op and must be cheap.
using CudaStreamProvider = void* (*)(int device);
void set_cuda_stream_provider(CudaStreamProvider provider);
CudaStreamProvider cuda_stream_provider();

// How the CUDA backend takes device memory (its buffers and the temporaries of
// its ops), on the current device in stream order: the torch layer installs
// libtorch's caching allocator, so lowbit's memory is reused with the model's
// and shows in torch's memory statistics. Without one, cudaMallocAsync.
struct CudaAllocator {
  void* (*allocate)(size_t bytes, void* stream) = nullptr;
  void (*release)(void* ptr) = nullptr;
};
void set_cuda_allocator(const CudaAllocator& allocator);
CudaAllocator cuda_allocator();

// OpenCL devices visible to this process, "<platform>/<device>", in index order
// (empty when no OpenCL platform is installed).
std::vector<std::string> opencl_devices();

}  // namespace lowbit::kernels
