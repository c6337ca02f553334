#include "kernels/backend.h"

#include <array>
#include <exception>
#include <vector>

namespace lowbit::kernels {
namespace {

bool is_power_of_two(int v) { return v > 0 && (v & (v - 1)) == 0; }

void check_blocksize(int blocksize, int min_blocksize, const char* op) {
  LOWBIT_CHECK(is_power_of_two(blocksize) && blocksize >= min_blocksize &&
                   blocksize <= kMaxBlocksize,
               op, ": blocksize ", blocksize, " is not supported; expected a power of two in [",
               min_blocksize, ", ", kMaxBlocksize, "]");
}

void check_float_type(DType t, const char* op, const char* what) {
  LOWBIT_CHECK(t == DType::F32 || t == DType::F16 || t == DType::BF16, op, ": ", what,
               " has dtype ", dtype_name(t), "; expected float32, float16 or bfloat16");
}

}  // namespace

const char* optimizer_rule_name(OptimizerRule rule) {
  switch (rule) {
    case OptimizerRule::Adam: return "adam";
    case OptimizerRule::LAMB: return "lamb";
    case OptimizerRule::Lion: return "lion";
    case OptimizerRule::RMSprop: return "rmsprop";
  }
  return "unknown";
}

std::string location_name(const Location& where) {
  return where.is_host() ? std::string("cpu") : "cuda:" + std::to_string(where.index);
}

std::unique_ptr<Buffer> Backend::wrap(void*, size_t, Location) { return nullptr; }

void Backend::check_buffer(const Buffer& b, size_t bytes, const char* op, const char* what) const {
  LOWBIT_CHECK(b.owner() == this, op, ": buffer '", what, "' belongs to another backend than ",
               name());
  LOWBIT_CHECK(b.bytes() >= bytes, op, ": buffer '", what, "' holds ", b.bytes(),
               " bytes; expected at least ", bytes);
}

void Backend::check_range(const Buffer& b, size_t bytes, size_t offset, const char* op,
                          const char* what) const {
  check_buffer(b, 0, op, what);
  LOWBIT_CHECK(offset <= b.bytes() && bytes <= b.bytes() - offset, op, ": range [", offset, ", ",
               offset + bytes, ") is outside a buffer of ", b.bytes(), " bytes");
}

void Backend::copy(const Buffer& src, Buffer& dst, size_t bytes) {
  check_buffer(src, bytes, "copy", "src");
  check_buffer(dst, bytes, "copy", "dst");
  if (bytes) do_copy(src, dst, bytes);
}

void Backend::quantize_blockwise(const Buffer& x, DType x_type, size_t n, int blocksize,
                                 const Buffer& code, Buffer& absmax, Buffer& codes,
                                 const StochasticRounding& rounding) {
  const char* op = "quantize_blockwise";
  check_blocksize(blocksize, kMinBlocksize8bit, op);
  check_float_type(x_type, op, "x");
  check_buffer(x, n * dtype_size(x_type), op, "x");
  check_buffer(code, 256 * sizeof(float), op, "code");
  check_buffer(absmax, num_blocks(n, blocksize) * sizeof(float), op, "absmax");
  check_buffer(codes, n, op, "codes");
  if (n == 0) return;
  do_quantize_blockwise(x, x_type, n, blocksize, code, absmax, codes, rounding);
}

void Backend::dequantize_blockwise(const Buffer& codes, const Buffer& absmax, const Buffer& code,
                                   size_t n, int blocksize, Buffer& out, DType out_type,
                                   float offset) {
  const char* op = "dequantize_blockwise";
  check_blocksize(blocksize, kMinBlocksize8bit, op);
  check_float_type(out_type, op, "out");
  check_buffer(codes, n, op, "codes");
  check_buffer(absmax, num_blocks(n, blocksize) * sizeof(float), op, "absmax");
  check_buffer(code, 256 * sizeof(float), op, "code");
  check_buffer(out, n * dtype_size(out_type), op, "out");
  if (n == 0) return;
  do_dequantize_blockwise(codes, absmax, code, n, blocksize, out, out_type, offset);
}

void Backend::quantize_4bit(const Buffer& x, DType x_type, size_t n, int blocksize,
                            Format4 format, Buffer& absmax, Buffer& packed) {
  const char* op = "quantize_4bit";
  check_blocksize(blocksize, kMinBlocksize4bit, op);
  check_float_type(x_type, op, "x");
  check_buffer(x, n * dtype_size(x_type), op, "x");
  check_buffer(absmax, num_blocks(n, blocksize) * sizeof(float), op, "absmax");
  check_buffer(packed, packed_4bit_bytes(n), op, "packed");
  if (n == 0) return;
  do_quantize_4bit(x, x_type, n, blocksize, format, absmax, packed);
}

void Backend::dequantize_4bit(const Buffer& packed, const Buffer& absmax, size_t n, int blocksize,
                              Format4 format, Buffer& out, DType out_type) {
  const char* op = "dequantize_4bit";
  check_blocksize(blocksize, kMinBlocksize4bit, op);
  check_float_type(out_type, op, "out");
  check_buffer(packed, packed_4bit_bytes(n), op, "packed");
  check_buffer(absmax, num_blocks(n, blocksize) * sizeof(float), op, "absmax");
  check_buffer(out, n * dtype_size(out_type), op, "out");
  if (n == 0) return;
  do_dequantize_4bit(packed, absmax, n, blocksize, format, out, out_type);
}


// ---- 4-bit matmul ----

namespace {

void check_matmul_dtype(DType t, const char* op) {
  LOWBIT_CHECK(t == DType::F32 || t == DType::F16 || t == DType::BF16, op, ": compute dtype ",
               dtype_name(t), " is not supported; expected float32, float16 or bfloat16");
}

}  // namespace

void Backend::check_weight4bit(const Weight4bit& w, const char* op) const {
  LOWBIT_CHECK(w.packed != nullptr && w.absmax != nullptr, op,
               ": the weight needs both 'packed' and 'absmax' buffers");
  LOWBIT_CHECK(w.out_features > 0 && w.in_features > 0, op, ": weight shape [", w.out_features,
               ", ", w.in_features, "] is empty; expected positive sizes");
  check_blocksize(w.blocksize, kMinBlocksize4bit, op);
  const size_t blocks = num_blocks(w.numel(), w.blocksize);
  check_buffer(*w.packed, packed_4bit_bytes(w.numel()), op, "packed");
  LOWBIT_CHECK((w.nested_absmax == nullptr) == (w.nested_code == nullptr), op,
               ": double quantization needs both 'nested_absmax' and 'nested_code'");
  if (w.double_quant()) {
    check_blocksize(w.nested_blocksize, kMinBlocksize8bit, op);
    check_buffer(*w.absmax, blocks, op, "absmax");
    check_buffer(*w.nested_absmax, num_blocks(blocks, w.nested_blocksize) * sizeof(float), op,
                 "nested_absmax");
    check_buffer(*w.nested_code, 256 * sizeof(float), op, "nested_code");
  } else {
    check_buffer(*w.absmax, blocks * sizeof(float), op, "absmax");
  }
}

void Backend::check_matmul_4bit(const Buffer& x, size_t m, const Weight4bit& w,
                                const Buffer* bias, const Buffer& y, DType dtype,
                                const char* op) const {
  check_matmul_dtype(dtype, op);
  check_weight4bit(w, op);
  check_buffer(x, m * w.in_features * dtype_size(dtype), op, "x");
  check_buffer(y, m * w.out_features * dtype_size(dtype), op, "y");
  if (bias) check_buffer(*bias, w.out_features * dtype_size(dtype), op, "bias");
}

void Backend::gemm_4bit(const Buffer& x, size_t m, const Weight4bit& w, const Buffer* bias,
                        Buffer& y, DType dtype) {
  check_matmul_4bit(x, m, w, bias, y, dtype, "gemm_4bit");
  if (m == 0) return;
  if (m == 1) return do_gemv_4bit(x, w, bias, y, dtype);
  do_gemm_4bit(x, m, w, bias, y, dtype);
}

void Backend::gemv_4bit(const Buffer& x, const Weight4bit& w, const Buffer* bias, Buffer& y,
                        DType dtype) {
  check_matmul_4bit(x, 1, w, bias, y, dtype, "gemv_4bit");
  do_gemv_4bit(x, w, bias, y, dtype);
}

void Backend::gemv_4bit_int8(const Buffer& x, const Weight4bit& w, const Buffer* bias, Buffer& y,
                             DType dtype) {
  check_matmul_4bit(x, 1, w, bias, y, dtype, "gemv_4bit_int8");
  do_gemv_4bit_int8(x, w, bias, y, dtype);
}

void Backend::gemm_4bit_input_grad(const Buffer& dy, size_t m, const Weight4bit& w, Buffer& dx,
                                   DType dtype) {
  const char* op = "gemm_4bit_input_grad";
  check_matmul_dtype(dtype, op);
  check_weight4bit(w, op);
  check_buffer(dy, m * w.out_features * dtype_size(dtype), op, "dy");
  check_buffer(dx, m * w.in_features * dtype_size(dtype), op, "dx");
  if (m == 0) return;
  do_gemm_4bit_input_grad(dy, m, w, dx, dtype);
}

void Backend::gemm_int8(const Buffer& x, size_t m, const WeightInt8& w, const Buffer* bias,
                        Buffer& y) {
  const char* op = "gemm_int8";
  LOWBIT_CHECK(w.codes != nullptr && w.scale != nullptr && w.row_sums != nullptr, op,
               ": the weight needs 'codes', 'scale' and 'row_sums' buffers");
  LOWBIT_CHECK(w.out_features > 0 && w.in_features > 0, op, ": weight shape [", w.out_features,
               ", ", w.in_features, "] is empty; expected positive sizes");
  LOWBIT_CHECK(w.in_features <= kMaxInt8InFeatures, op, ": in_features ", w.in_features,
               " exceeds ", kMaxInt8InFeatures, ", beyond which int32 sums of 127 x 127 products",
               " could overflow");
  check_buffer(*w.codes, w.out_features * w.in_features, op, "codes");
  check_buffer(*w.scale, w.out_features * sizeof(float), op, "scale");
  check_buffer(*w.row_sums, w.out_features * sizeof(int32_t), op, "row_sums");
  check_buffer(x, m * w.in_features * sizeof(float), op, "x");
  check_buffer(y, m * w.out_features * sizeof(float), op, "y");
  if (bias) check_buffer(*bias, w.out_features * sizeof(float), op, "bias");
  if (m == 0) return;
  do_gemm_int8(x, m, w, bias, y);
}

void Backend::check_optimizer_operands(const OptimizerOperands& op, const char* name) const {
  const int rule = int(op.rule);
  LOWBIT_CHECK(rule >= 0 && rule <= int(OptimizerRule::RMSprop), name, ": unknown rule ", rule);
  const char* rule_name = optimizer_rule_name(op.rule);
  check_blocksize(op.blocksize, kMinBlocksize8bit, name);
  check_float_type(op.param_type, name, "param");
  LOWBIT_CHECK(op.param && op.grad && op.state1, name, ": param, grad and state1 are required");
  const size_t n = op.n;
  check_buffer(*op.param, n * dtype_size(op.param_type), name, "param");
  check_buffer(*op.grad, n * dtype_size(op.param_type), name, "grad");
  const bool two_states = op.rule == OptimizerRule::Adam || op.rule == OptimizerRule::LAMB;
  LOWBIT_CHECK(!two_states || op.state2, name, ": rule ", rule_name, " needs state2");
  LOWBIT_CHECK(op.rule != OptimizerRule::Lion || !op.state2, name, ": rule ", rule_name,
               " has one state; state2 must be null");
  const auto check_state = [&](const Buffer* state, const Buffer* absmax, const Buffer* qmap,
                               const char* what, const char* absmax_name, const char* qmap_name) {
    if (!state) return;
    if (!op.quantized) {
      check_buffer(*state, n * sizeof(float), name, what);
      return;
    }
    LOWBIT_CHECK(absmax && qmap, name, ": 8-bit ", what, " needs ", absmax_name, " and ",
                 qmap_name);
    check_buffer(*state, n, name, what);
    check_buffer(*absmax, num_blocks(n, op.blocksize) * sizeof(float), name, absmax_name);
    check_buffer(*qmap, 256 * sizeof(float), name, qmap_name);
  };
  check_state(op.state1, op.absmax1, op.qmap1, "state1", "absmax1", "qmap1");
  check_state(op.state2, op.absmax2, op.qmap2, "state2", "absmax2", "qmap2");
}

void Backend::check_step_buffers(const Buffer& slots, size_t slot, const Buffer* flags,
                                 const char* op) const {
  check_buffer(slots, (slot + 1) * sizeof(StepSlot), op, "slots");
  if (flags) check_buffer(*flags, sizeof(StepFlags), op, "flags");
}

void Backend::check_items(const std::vector<StepItem>& items, const Buffer& slots,
                          const Buffer& flags, const char* op) const {
  check_buffer(flags, sizeof(StepFlags), op, "flags");
  for (const StepItem& item : items) {
    check_step_buffers(slots, item.slot, nullptr, op);
    const StepHparams& h = item.hparams;
    LOWBIT_CHECK(h.rule >= 0 && h.rule <= int(OptimizerRule::RMSprop), op, ": unknown rule ",
                 h.rule);
    LOWBIT_CHECK(h.percentile >= 0 && h.percentile <= 100, op, ": percentile ", h.percentile,
                 " is outside [0, 100]");
    LOWBIT_CHECK(item.step, op, ": every item needs its step count");
    check_buffer(*item.step, sizeof(int64_t), op, "step");
    if (h.percentile < 100) {
      LOWBIT_CHECK(item.history, op, ": percentile clipping needs the gradient-norm history");
      check_buffer(*item.history, kGnormHistory * sizeof(float), op, "history");
    }
  }
}

void Backend::gradient_stats(const Buffer& grad, DType grad_type, size_t n, int blocksize,
                             Buffer& slots, size_t slot, bool sum) {
  const char* op = "gradient_stats";
  check_blocksize(blocksize, kMinBlocksize8bit, op);
  check_float_type(grad_type, op, "grad");
  check_buffer(grad, n * dtype_size(grad_type), op, "grad");
  check_step_buffers(slots, slot, nullptr, op);
  do_gradient_stats(grad, grad_type, n, blocksize, slots, slot, sum);
}

void Backend::optimizer_prepare(const std::vector<StepItem>& items, bool skip_nonfinite,
                                Buffer& slots, Buffer& flags) {
  check_items(items, slots, flags, "optimizer_prepare");
  do_optimizer_prepare(items, skip_nonfinite, slots, flags);
}

void Backend::optimizer_update_norms(const OptimizerOperands& op, Buffer& slots, size_t slot,
                                     const Buffer& flags) {
  check_optimizer_operands(op, "optimizer_update_norms");
  check_step_buffers(slots, slot, &flags, "optimizer_update_norms");
  do_optimizer_update_norms(op, slots, slot, flags);
}

void Backend::optimizer_scale(const std::vector<StepItem>& items, Buffer& slots,
                              const Buffer& flags) {
  check_items(items, slots, flags, "optimizer_scale");
  do_optimizer_scale(items, slots, flags);
}

void Backend::optimizer_update(const OptimizerOperands& op, const Buffer& slots, size_t slot,
                               Buffer& flags) {
  check_optimizer_operands(op, "optimizer_update");
  check_step_buffers(slots, slot, &flags, "optimizer_update");
  if (op.n == 0) return;
  do_optimizer_update(op, slots, slot, flags);
}

// ---- the host-side forms ----

namespace {

// A slot and flags on `be` for one parameter, written from the host.
struct HostStep {
  std::unique_ptr<Buffer> slots, flags;
  explicit HostStep(Backend& be, const OptimizerArgs* args = nullptr) {
    StepSlot slot{};
    if (args) slot.args = *args;
    const StepFlags f{};
    slots = be.allocate(sizeof(StepSlot));
    flags = be.allocate(sizeof(StepFlags));
    be.write(*slots, &slot, sizeof(slot));
    be.write(*flags, &f, sizeof(f));
  }
  StepSlot slot(Backend& be) const {
    StepSlot s;
    be.read(*slots, &s, sizeof(s));
    return s;
  }
};

}  // namespace

size_t Backend::optimizer_update(const OptimizerOperands& op, const OptimizerArgs& args) {
  HostStep step(*this, &args);
  optimizer_update(op, *step.slots, 0, *step.flags);
  StepFlags f;
  read(*step.flags, &f, sizeof(f));
  return size_t(f.skipped_blocks);
}

UpdateNorms Backend::optimizer_update_norms(const OptimizerOperands& op,
                                            const OptimizerArgs& args) {
  HostStep step(*this, &args);
  optimizer_update_norms(op, *step.slots, 0, *step.flags);
  const StepSlot s = step.slot(*this);
  return {s.update_sq, s.param_sq};
}

GradientStats Backend::gradient_stats(const Buffer& grad, DType grad_type, size_t n,
                                      int blocksize, bool sum) {
  HostStep step(*this);
  gradient_stats(grad, grad_type, n, blocksize, *step.slots, 0, sum);
  const StepSlot s = step.slot(*this);
  return {s.grad_sq, s.grad_nonfinite == 0};
}

void Backend::read_all(const std::vector<HostRead>& reads) {
  for (const HostRead& r : reads) read(*r.src, r.dst, r.bytes);
}

void Backend::write_all(const std::vector<HostWrite>& writes) {
  for (const HostWrite& w : writes) write(*w.dst, w.src, w.bytes);
}

// The decisions of optimizer_prepare / optimizer_scale made on the host, with
// the same functions (kernels/step_rules.h) the CUDA kernels run. Each reads
// what it needs in one read_all and writes in one write_all, so that a device
// backend waits twice per call, not twice per parameter.
void Backend::do_optimizer_prepare(const std::vector<StepItem>& items, bool skip_nonfinite,
                                   Buffer& slots, Buffer& flags) {
  std::vector<StepSlot> s(slots.bytes() / sizeof(StepSlot));
  StepFlags f;
  std::vector<int64_t> steps(items.size());
  std::vector<std::array<float, kGnormHistory>> histories(items.size());
  // Percentile clipping's history, for an item whose gradient was checked.
  const auto clips = [](const StepItem& item) {
    return item.hparams.percentile < 100 && item.checked;
  };
  std::vector<HostRead> reads = {{&slots, s.data(), s.size() * sizeof(StepSlot)},
                                 {&flags, &f, sizeof(f)}};
  for (size_t i = 0; i < items.size(); ++i) {
    reads.push_back({items[i].step, &steps[i], sizeof(int64_t)});
    if (clips(items[i]))
      reads.push_back({items[i].history, histories[i].data(), sizeof(histories[i])});
  }
  // Nothing has changed yet.
  try {
    read_all(reads);
  } catch (const std::exception& e) {
    throw NothingChanged(e.what());
  }
  const StepFlags old_flags = f;
  const std::vector<StepSlot> old_slots = s;
  const std::vector<int64_t> old_steps = steps;
  const std::vector<std::array<float, kGnormHistory>> old_histories = histories;
  // Every write together, then; a write_all that fails has them all put back, so that the
  // step can fail with nothing changed instead of with some step counts advanced.
  std::vector<HostWrite> writes, undo;
  const auto change = [&](Buffer& b, const void* now, const void* old, size_t bytes) {
    writes.push_back({&b, now, bytes});
    undo.push_back({&b, old, bytes});
  };
  f.found_inf = 0;
  if (skip_nonfinite)
    for (const StepItem& item : items)
      if (item.checked && s[item.slot].grad_nonfinite) f.found_inf = 1;
  if (f.found_inf) {
    ++f.skipped_steps;
  } else {
    for (size_t i = 0; i < items.size(); ++i) {
      const StepItem& item = items[i];
      StepSlot& slot = s[item.slot];
      steps[i] += 1;
      change(*item.step, &steps[i], &old_steps[i], sizeof(int64_t));
      slot.args = lb_step_args(item.hparams, steps[i], 1.0);
      // Under SkipBlocks a non-finite gradient must not enter the history.
      if (clips(item) && !slot.grad_nonfinite) {
        slot.args.gnorm_scale = float(lb_percentile_scale(histories[i].data(), steps[i],
                                                          slot.grad_sq, item.hparams.percentile));
        change(*item.history, histories[i].data(), old_histories[i].data(),
               sizeof(histories[i]));
      }
    }
    change(slots, s.data(), old_slots.data(), s.size() * sizeof(StepSlot));
  }
  change(flags, &f, &old_flags, sizeof(f));
  try {
    write_all(writes);
  } catch (const std::exception& e) {
    const std::exception_ptr first = std::current_exception();
    try {
      write_all(undo);
    } catch (...) {
      std::rethrow_exception(first);  // not undone: the first error, as it came
    }
    throw NothingChanged(e.what());
  }
}

void Backend::do_optimizer_scale(const std::vector<StepItem>& items, Buffer& slots,
                                 const Buffer& flags) {
  StepFlags f;
  std::vector<StepSlot> s(slots.bytes() / sizeof(StepSlot));
  std::vector<int64_t> steps(items.size());
  std::vector<HostRead> reads = {{&flags, &f, sizeof(f)},
                                 {&slots, s.data(), s.size() * sizeof(StepSlot)}};
  for (size_t i = 0; i < items.size(); ++i)
    if (lb_needs_norms(items[i].hparams))
      reads.push_back({items[i].step, &steps[i], sizeof(int64_t)});
  read_all(reads);
  if (f.found_inf) return;
  for (size_t i = 0; i < items.size(); ++i) {
    const StepItem& item = items[i];
    if (!lb_needs_norms(item.hparams)) continue;
    StepSlot& slot = s[item.slot];
    const double lr_scale =
        lb_norm_scale(item.hparams, slot.args.lr_step, slot.update_sq, slot.param_sq);
    if (lr_scale == 1.0) continue;
    const float gnorm_scale = slot.args.gnorm_scale;
    slot.args = lb_step_args(item.hparams, steps[i], lr_scale);
    slot.args.gnorm_scale = gnorm_scale;
  }
  write(slots, s.data(), s.size() * sizeof(StepSlot));
}

}  // namespace lowbit::kernels
