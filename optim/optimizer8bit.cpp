#include "optim/optimizer8bit.h"

#include <sstream>

#include <torch/torch.h>

#include "quant/codebook.h"
#include "quant/tensor_buffer.h"

namespace lowbit::optim {
namespace {

constexpr int64_t kGnormHistory = kernels::kGnormHistory;  // bitsandbytes' window

// Closes the error of a step that failed before anything changed.
constexpr char kNothingChanged[] =
    "\nNothing was changed: parameters, states and step counts are as before this step";

// An exception's message without libtorch's backtrace.
std::string reason_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

// Which dynamic map a state uses: signed for first moments and momentum
// buffers, unsigned for non-negative second moments (Adam's v, RMSprop's
// square average: twice the resolution of the signed map on [0, 1]).
bool state_is_signed(kernels::OptimizerRule rule, int which) {
  if (rule == kernels::OptimizerRule::RMSprop) return which == 2;
  return which == 1;
}

std::string describe(size_t group, size_t index, const torch::Tensor& p) {
  std::ostringstream os;
  os << "parameter " << index << " of group " << group << " (shape " << p.sizes() << ", "
     << p.scalar_type() << ")";
  return os.str();
}

// The one device of every parameter of the groups (CPU when there are none).
torch::Device parameters_device(const std::vector<torch::optim::OptimizerParamGroup>& groups,
                                const std::string& name) {
  std::optional<torch::Device> device;
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < groups[g].params().size(); ++i) {
      const torch::Tensor& p = groups[g].params()[i];
      if (!device) device = p.device();
      TORCH_CHECK(p.device() == *device, name, ": ", describe(g, i, p), " is on ", p.device(),
                  " but an earlier parameter is on ", *device,
                  "; one optimizer updates parameters of one device");
    }
  return device.value_or(torch::Device(torch::kCPU));
}

}  // namespace

struct Optimizer8bit::Work {
  size_t group = 0;
  size_t index = 0;
  torch::Tensor param;
  torch::Tensor value;  // `param`, or its contiguous copy
  torch::Tensor grad;   // contiguous
  ParamBuffers* buffers = nullptr;
  kernels::OptimizerOperands op;
  kernels::StepItem item;  // item.slot: this parameter's StepSlot
};

Optimizer8bit::Optimizer8bit(const char* name,
                             std::vector<torch::optim::OptimizerParamGroup> param_groups,
                             std::unique_ptr<torch::optim::OptimizerOptions> defaults,
                             std::shared_ptr<kernels::Backend> backend)
    : Optimizer(std::move(param_groups), std::move(defaults)), name_(name) {
  device_ = parameters_device(param_groups_, name_);
  TORCH_CHECK(device_.is_cpu() || device_.is_cuda(), name_, ": the parameters are on ", device_,
              "; lowbit optimizers update CPU and CUDA tensors");
  const std::string what = name_ + ": the parameters";
  const kernels::Location at = quant::location_of(device_, what.c_str());
  backend_ = backend ? std::move(backend) : kernels::backend_for(at);
  quant::check_reachable(*backend_, at, what.c_str());
  for (bool is_signed : {false, true}) {
    const torch::Tensor map = quant::create_dynamic_map(is_signed);
    zero_code_[is_signed] = kernels::zero_index(map.data_ptr<float>(), 256);
    qmap_[is_signed] =
        std::make_unique<quant::TensorBuffer>(*backend_, map.to(device_), /*upload=*/true);
  }
  flags_ = backend_->wrap(&host_flags_, sizeof(host_flags_), kernels::Location::host());
  if (!flags_) {
    flags_ = backend_->allocate(sizeof(kernels::StepFlags));
    backend_->write(*flags_, &host_flags_, sizeof(host_flags_));
  }
}

StateSettings ParamOverride::applied_to(StateSettings settings) const {
  if (optim_bits) settings.optim_bits = *optim_bits;
  if (block_size) settings.block_size = *block_size;
  if (min_8bit_size) settings.min_8bit_size = *min_8bit_size;
  return settings;
}

void Optimizer8bit::check_groups() const {
  for (const auto& group : param_groups_) {
    check_options(group.options());
    settings(group.options()).check(name_.c_str());
  }
}

StateSettings Optimizer8bit::effective_settings(const StateKey& key,
                                                const torch::optim::OptimizerOptions& group) const {
  const auto it = overrides_.find(key);
  return it == overrides_.end() ? settings(group) : it->second.applied_to(settings(group));
}

void Optimizer8bit::override_config(const torch::Tensor& param, const ParamOverride& config) {
  const StateKey key = state_key(param);
  TORCH_CHECK(state_.find(key) == state_.end(), name_, ": override_config for a parameter (shape ",
              param.sizes(),
              ") whose state already exists; call it before the parameter's first step");
  config.applied_to(StateSettings{}).check((name_ + " override_config").c_str());
  overrides_[key] = config;
}

QuantizedParamState& Optimizer8bit::state_for(const StateKey& key, const torch::Tensor& param,
                                              const StateSettings& settings, size_t group,
                                              size_t index) {
  auto& slot = state_[key];
  const bool quantized = settings.quantizes(param.numel());
  const int64_t blocks = settings.blocks(param.numel());
  const auto on_device = torch::TensorOptions().device(device_);
  const auto make_state = [&](int which, torch::Tensor& values, torch::Tensor& absmax) {
    if (!quantized) {
      values = torch::zeros(param.sizes(), on_device.dtype(torch::kFloat32));
      return;
    }
    const int zero = zero_code_[state_is_signed(rule(), which)];
    values = torch::full(param.sizes(), zero, on_device.dtype(torch::kUInt8));
    absmax = torch::zeros({blocks}, on_device.dtype(torch::kFloat32));
  };
  if (!slot) {
    auto state = std::make_unique<QuantizedParamState>();
    torch::Tensor values, absmax;
    make_state(1, values, absmax);
    state->state1(values);
    state->absmax1(absmax);
    slot = std::move(state);
  }
  auto& state = static_cast<QuantizedParamState&>(*slot);
  TORCH_CHECK(state.quantized() == quantized, name_, ": the state of ",
              describe(group, index, param), " is ",
              state.quantized() ? "8-bit" : "32-bit", " but optim_bits / min_8bit_size / ",
              "override_config now ask for ", quantized ? "8-bit" : "32-bit",
              " states; the precision of a state cannot change after it is created");
  TORCH_CHECK(!quantized || state.absmax1().numel() == blocks, name_, ": the state of ",
              describe(group, index, param),
              " has ", state.absmax1().numel(), " absmax blocks but block_size ",
              settings.block_size, " needs ", blocks,
              "; the block size of a state cannot change after it is created");
  if (has_state2(param_groups_[group].options()) && !state.state2().defined()) {
    torch::Tensor values, absmax;
    make_state(2, values, absmax);
    state.state2(values);
    state.absmax2(absmax);
  }
  if (settings.percentile_clipping < 100 && !state.gnorm_vec().defined())
    state.gnorm_vec(torch::zeros({kGnormHistory}, on_device.dtype(torch::kFloat32)));
  return state;
}

void Optimizer8bit::check_device(const torch::Tensor& p, size_t group, size_t index) const {
  const torch::Tensor& grad = p.grad();
  TORCH_CHECK(p.device() == device_, name_, ": ", describe(group, index, p), " is on ",
              p.device(), " but this optimizer was built for parameters on ", device_,
              " (its kernels run on ", backend_->name(),
              "); build the optimizer after moving the model to its device");
  TORCH_CHECK(!grad.is_sparse(), name_, ": ", describe(group, index, p),
              " has a sparse gradient; only dense gradients are supported (e.g. "
              "torch::nn::Embedding without sparse)");
  TORCH_CHECK(p.scalar_type() == torch::kFloat32 || p.scalar_type() == torch::kFloat16 ||
                  p.scalar_type() == torch::kBFloat16,
              name_, ": ", describe(group, index, p), " has dtype ", p.scalar_type(),
              "; expected float32, float16 or bfloat16");
  TORCH_CHECK(grad.scalar_type() == p.scalar_type(), name_, ": the gradient of ",
              describe(group, index, p), " has dtype ", grad.scalar_type(),
              "; expected the parameter's dtype");
  TORCH_CHECK(grad.device() == p.device() && grad.sizes() == p.sizes(), name_,
              ": the gradient of ", describe(group, index, p), " has shape ", grad.sizes(),
              " on ", grad.device(), "; expected the parameter's shape on its device");
}

std::vector<Optimizer8bit::Work> Optimizer8bit::prepare(std::vector<StateKey>& created) {
  check_groups();
  std::vector<Work> work;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& options = param_groups_[g].options();
    const auto& params = param_groups_[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const torch::Tensor& p = params[i];
      if (!p.grad().defined()) continue;
      // Messages are built only when a check fails (no text per step).
      check_device(p, g, i);
      Work w;
      w.group = g;
      w.index = i;
      w.param = p;
      w.value = p.contiguous();
      w.grad = p.grad().contiguous();
      const StateKey key = state_key(p);
      const StateSettings settings = effective_settings(key, options);
      if (state_.find(key) == state_.end()) created.push_back(key);
      QuantizedParamState* state = nullptr;
      try {
        state = &state_for(key, p, settings, g, i);
      } catch (const std::exception& e) {
        TORCH_CHECK(false, name_, ": cannot create the states of ", describe(g, i, p), " on ",
                    device_, ": ", reason_of(e), kNothingChanged);
      }
      auto& buffers = buffers_[key];
      if (!buffers) buffers = std::make_unique<ParamBuffers>(*backend_);
      w.buffers = buffers.get();
      try {
        w.op = w.buffers->bind(w.value, w.grad, *state);
      } catch (const std::exception& e) {
        TORCH_CHECK(false, name_, ": cannot place the operands of ", describe(g, i, p), " on ",
                    backend_->name(), ": ", reason_of(e), kNothingChanged);
      }
      w.op.rule = rule();
      w.op.param_type = quant::kernel_dtype(p.scalar_type(), "parameter");
      w.op.blocksize = int(settings.block_size);
      w.op.qmap1 = &qmap_[state_is_signed(rule(), 1)]->buffer();
      w.op.qmap2 = &qmap_[state_is_signed(rule(), 2)]->buffer();
      w.item.slot = work.size();
      w.item.hparams = hparams(options);
      w.item.hparams.percentile = int32_t(settings.percentile_clipping);
      w.item.hparams.max_unorm = settings.max_unorm;
      w.item.step = w.buffers->step();
      w.item.history = w.buffers->history();
      work.push_back(std::move(w));
    }
  }
  return work;
}

void Optimizer8bit::forget_states(const std::vector<StateKey>& created) {
  for (const StateKey& key : created) {
    state_.erase(key);
    buffers_.erase(key);
  }
}

void Optimizer8bit::ensure_step_buffers(size_t count) {
  const size_t bytes = count * sizeof(kernels::StepSlot);
  if (slots_ && slots_->bytes() >= bytes) return;
  try {
    slots_ = backend_->allocate(bytes);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, name_, ": cannot allocate the step's decisions (", bytes, " bytes) on ",
                backend_->name(), ": ", reason_of(e), kNothingChanged);
  }
}

kernels::StepFlags Optimizer8bit::read_flags() const {
  kernels::StepFlags f;
  backend_->read(*flags_, &f, sizeof(f));
  return f;
}

// One step as the backend decides it (kernels/backend.h): gradient checks,
// prepare (skip decision, step counts, percentile clipping), norms and their
// scale where a rule needs them, then the fused updates. On CUDA every call
// below is queued on the current stream; only the Raise policy and a
// WholeTensorSums (sharded parameters) read back.
//
// Faults: everything that can fail without a broken device (a state that
// cannot be allocated, a kernel that does not build) fails before
// optimizer_prepare, and then nothing has changed: the states this step
// created are dropped. From optimizer_prepare on, step counts, states and
// parameters change in place (on the CPU, on OpenCL with host memory, on
// CUDA), so a failure there (a lost device) cannot be undone without a copy of
// every state per step; the optimizer then refuses to step until load().
torch::Tensor Optimizer8bit::step(LossClosure closure) {
  TORCH_CHECK(broken_.empty(), name_, ": an earlier step failed midway (", broken_,
              "), so the optimizer's states, step counts and the parameters no longer match; "
              "restore the model and the optimizer from a checkpoint (load()) before stepping "
              "again");
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  // Until optimizer_prepare nothing but the states this step creates changes;
  // a failure drops them again.
  std::vector<StateKey> created;
  std::vector<Work> work;
  std::vector<kernels::StepItem> items, scaled;
  kernels::Backend& be = *backend_;
  try {
    work = prepare(created);
    if (work.empty()) {
      exchange_sums(work, /*update=*/false);
      exchange_sums(work, /*update=*/true);
      return loss;
    }
    ensure_step_buffers(work.size());
    ready_updates(work);
    // One read of each gradient: its squared norm (percentile clipping) and
    // whether it is finite, for every parameter before any is updated.
    for (Work& w : work) {
      if (policy_ == NonFinitePolicy::SkipBlocks && w.item.hparams.percentile == 100) continue;
      try {
        be.gradient_stats(*w.op.grad, w.op.param_type, w.op.n, w.op.blocksize, *slots_,
                          w.item.slot, /*sum=*/w.item.hparams.percentile < 100);
      } catch (const std::exception& e) {
        TORCH_CHECK(false, name_, ": cannot check the gradient of ",
                    describe(w.group, w.index, w.param), " on ", be.name(), ": ", reason_of(e),
                    kNothingChanged);
      }
      w.item.checked = true;
    }
    if (policy_ == NonFinitePolicy::Raise)
      for (const Work& w : work) {
        kernels::StepSlot slot;
        be.read(*slots_, &slot, sizeof(slot), w.item.slot * sizeof(slot));
        TORCH_CHECK(!slot.grad_nonfinite, name_, ": the gradient of ",
                    describe(w.group, w.index, w.param),
                    " holds NaN or infinite values (or values whose squares overflow float32); "
                    "nothing was updated. set_nonfinite_policy(NonFinitePolicy::SkipStep) skips "
                    "such steps instead");
      }
    for (const Work& w : work) {
      items.push_back(w.item);
      if (kernels::lb_needs_norms(w.item.hparams)) scaled.push_back(w.item);
    }
    exchange_sums(work, /*update=*/false);
  } catch (...) {
    forget_states(created);
    throw;
  }
  const bool raise = policy_ == NonFinitePolicy::Raise;
  const Work* overflowed = nullptr;
  int64_t overflowed_blocks = 0;
  const Work* current = nullptr;  // the parameter being updated, for the error
  bool prepared = false;
  try {
    be.optimizer_prepare(items, policy_ != NonFinitePolicy::SkipBlocks, *slots_, *flags_);
    prepared = true;
    for (const Work& w : work)
      if (kernels::lb_needs_norms(w.item.hparams))
        be.optimizer_update_norms(w.op, *slots_, w.item.slot, *flags_);
    exchange_sums(work, /*update=*/true);
    if (!scaled.empty()) be.optimizer_scale(scaled, *slots_, *flags_);
    int64_t skipped = raise ? int64_t(read_flags().skipped_blocks) : 0;
    for (Work& w : work) {
      current = &w;
      be.optimizer_update(w.op, *slots_, w.item.slot, *flags_);
      w.buffers->finish(w.value);
      if (!w.value.is_same(w.param)) w.param.copy_(w.value);
      if (!raise) continue;
      const int64_t now = int64_t(read_flags().skipped_blocks);
      if (now != skipped && !overflowed) {
        overflowed = &w;
        overflowed_blocks = now - skipped;
      }
      skipped = now;
    }
  } catch (const std::exception& e) {
    // optimizer_prepare failed but put back what it had changed.
    if (!prepared && dynamic_cast<const kernels::NothingChanged*>(&e)) {
      forget_states(created);
      TORCH_CHECK(false, name_, ": the step could not begin on ", be.name(), ": ", e.what(),
                  kNothingChanged);
    }
    std::ostringstream where;
    if (current)
      where << "while updating " << describe(current->group, current->index, current->param);
    else
      where << "after the step counts began to change, before any parameter was updated";
    broken_ = where.str();
    TORCH_CHECK(false, name_, ": the step failed ", broken_, " on ", be.name(), ": ", e.what(),
                "\nThe optimizer's state is now inconsistent (step counts advanced; parameters "
                "and states updated up to that point, not after it). Restore the model and the "
                "optimizer from a checkpoint (load()); until then step() refuses to run");
  }
  // Raised once the whole step is applied, so the states stay consistent.
  TORCH_CHECK(!overflowed, name_, ": ", overflowed_blocks, " block(s) of ",
              describe(overflowed->group, overflowed->index, overflowed->param),
              " would have become NaN or infinite (the gradient is finite but the update "
              "overflows float32) and were left unchanged; the rest of the step was applied");
  return loss;
}

// Every kernel and buffer the updates will need, before the first change, so
// that a kernel that does not build (or a scratch buffer that cannot be
// allocated) fails the step while nothing has changed.
void Optimizer8bit::ready_updates(const std::vector<Work>& work) {
  for (const Work& w : work) {
    try {
      backend_->ready_optimizer_update(w.op, kernels::lb_needs_norms(w.item.hparams));
    } catch (const std::exception& e) {
      TORCH_CHECK(false, name_, ": cannot prepare the update of ",
                  describe(w.group, w.index, w.param), " on ", backend_->name(), ": ",
                  reason_of(e), kNothingChanged);
    }
  }
}

NonFiniteStats Optimizer8bit::nonfinite_stats() const {
  const kernels::StepFlags f = read_flags();
  return {int64_t(f.skipped_steps), int64_t(f.skipped_blocks)};
}

void Optimizer8bit::set_nonfinite_stats(const NonFiniteStats& stats) {
  TORCH_CHECK(stats.skipped_steps >= 0 && stats.skipped_blocks >= 0, name_,
              ": set_nonfinite_stats: counters must not be negative (got ", stats.skipped_steps,
              " skipped steps, ", stats.skipped_blocks, " skipped blocks)");
  kernels::StepFlags f = read_flags();
  f.skipped_steps = uint64_t(stats.skipped_steps);
  f.skipped_blocks = uint64_t(stats.skipped_blocks);
  backend_->write(*flags_, &f, sizeof(f));
}

void Optimizer8bit::exchange_sums(const std::vector<Work>& work, bool update) {
  if (!whole_sums_) return;
  std::vector<torch::Tensor> parts;
  std::vector<size_t> picked;
  for (const Work& w : work)
    if (update ? kernels::lb_needs_norms(w.item.hparams) : w.item.hparams.percentile < 100) {
      parts.push_back(w.param);
      picked.push_back(w.item.slot);
    }
  std::vector<kernels::StepSlot> s(picked.empty() ? 0 : work.size());
  if (!picked.empty()) backend_->read(*slots_, s.data(), s.size() * sizeof(kernels::StepSlot));
  std::vector<double> first, param_sq;
  for (size_t slot : picked) {
    first.push_back(update ? s[slot].update_sq : s[slot].grad_sq);
    param_sq.push_back(s[slot].param_sq);
  }
  if (update)
    whole_sums_->update(parts, first, param_sq);
  else
    whole_sums_->gradient(parts, first);
  TORCH_CHECK(first.size() == picked.size() && param_sq.size() == picked.size(), name_,
              ": WholeTensorSums changed the number of sums (", picked.size(), " parameters)");
  for (size_t i = 0; i < picked.size(); ++i) {
    kernels::StepSlot& slot = s[picked[i]];
    (update ? slot.update_sq : slot.grad_sq) = first[i];
    if (update) slot.param_sq = param_sq[i];
  }
  if (!picked.empty()) backend_->write(*slots_, s.data(), s.size() * sizeof(kernels::StepSlot));
}

const QuantizedParamState* Optimizer8bit::param_state(size_t group, size_t index) const {
  const torch::Tensor& p = param_groups_.at(group).params().at(index);
  const auto it = state_.find(state_key(p));
  return it == state_.end() ? nullptr : static_cast<const QuantizedParamState*>(it->second.get());
}

void Optimizer8bit::set_param_state(size_t group, size_t index,
                                    std::unique_ptr<QuantizedParamState> state) {
  TORCH_CHECK(state, name_, ": set_param_state: no state given");
  const StateKey key = state_key(param_groups_.at(group).params().at(index));
  state_[key] = std::move(state);
  // A device copy made from the state this one replaces.
  buffers_.erase(key);
  adopt_loaded_state(group, index);
}

int64_t Optimizer8bit::state_bytes() const {
  int64_t total = 0;
  for (const auto& item : state_)
    total += static_cast<const QuantizedParamState&>(*item.second).bytes();
  return total;
}

int64_t Optimizer8bit::state_bytes(const torch::Tensor& param) const {
  const auto it = state_.find(state_key(param));
  return it == state_.end() ? 0 : static_cast<const QuantizedParamState&>(*it->second).bytes();
}

void Optimizer8bit::sync_state() const {
  for (const auto& item : buffers_) {
    const auto it = state_.find(item.first);
    if (it != state_.end())
      item.second->download_states(static_cast<QuantizedParamState&>(*it->second));
  }
}

void Optimizer8bit::save_extras(torch::serialize::OutputArchive& archive) const {
  const NonFiniteStats stats = nonfinite_stats();
  archive.write("lowbit/skipped_steps", c10::IValue(stats.skipped_steps));
  archive.write("lowbit/skipped_blocks", c10::IValue(stats.skipped_blocks));
}

void Optimizer8bit::load_extras(torch::serialize::InputArchive& archive) {
  c10::IValue v;
  kernels::StepFlags f{};
  if (archive.try_read("lowbit/skipped_steps", v)) f.skipped_steps = uint64_t(v.toInt());
  if (archive.try_read("lowbit/skipped_blocks", v)) f.skipped_blocks = uint64_t(v.toInt());
  backend_->write(*flags_, &f, sizeof(f));
  // Device copies were made from the states that load() replaced.
  buffers_.clear();
  adopt_loaded_states();
  broken_.clear();
}

void Optimizer8bit::adopt_loaded_states() {
  for (size_t g = 0; g < param_groups_.size(); ++g)
    for (size_t i = 0; i < param_groups_[g].params().size(); ++i) adopt_loaded_state(g, i);
}

void Optimizer8bit::adopt_loaded_state(size_t g, size_t i) {
  const auto& options = param_groups_[g].options();
  const torch::Tensor& p = param_groups_[g].params()[i];
  const StateKey key = state_key(p);
  const auto it = state_.find(key);
  if (it == state_.end()) return;
  auto& s = static_cast<QuantizedParamState&>(*it->second);
  const std::string where = name_ + ": the loaded state of " + describe(g, i, p);
  const StateSettings settings = effective_settings(key, options);
  const bool quantized = settings.quantizes(p.numel());
  const int64_t blocks = settings.blocks(p.numel());
  const auto check = [&](const torch::Tensor& values, const torch::Tensor& absmax,
                         const char* name) {
    TORCH_CHECK(values.defined(), where, " has no ", name);
    TORCH_CHECK(values.numel() == p.numel(), where, ": ", name, " has ", values.numel(),
                " elements; expected ", p.numel());
    TORCH_CHECK(values.scalar_type() == (quantized ? torch::kUInt8 : torch::kFloat32), where, ": ",
                name, " has dtype ", values.scalar_type(), " but this optimizer uses ",
                quantized ? "8-bit" : "32-bit",
                " states for it (optim_bits, min_8bit_size, "
                "override_config must match the run that saved it)");
    if (quantized)
      TORCH_CHECK(
          absmax.defined() && absmax.scalar_type() == torch::kFloat32 && absmax.numel() == blocks,
          where, ": the absmax of ", name, " must be ", blocks, " float32 values (block_size ",
          settings.block_size, ")");
  };
  check(s.state1(), s.absmax1(), "state1");
  if (has_state2(options)) check(s.state2(), s.absmax2(), "state2");
  TORCH_CHECK(s.step() >= 0, where, ": step is ", s.step());
  TORCH_CHECK(!s.gnorm_vec().defined() || (s.gnorm_vec().numel() == kGnormHistory &&
                                           s.gnorm_vec().scalar_type() == torch::kFloat32),
              where, ": gnorm_vec must be ", kGnormHistory, " float32 values");
  const auto adopt = [&](const torch::Tensor& t) {
    return t.defined() ? t.to(device_).contiguous() : t;
  };
  s.state1(adopt(s.state1()));
  s.state2(adopt(s.state2()));
  s.absmax1(adopt(s.absmax1()));
  s.absmax2(adopt(s.absmax2()));
  s.gnorm_vec(adopt(s.gnorm_vec()));
}

}  // namespace lowbit::optim
