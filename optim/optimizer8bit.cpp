#include "optim/optimizer8bit.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <sstream>

#include <torch/torch.h>

#include "quant/codebook.h"
#include "quant/tensor_buffer.h"

namespace lowbit::optim {
namespace {

constexpr int64_t kGnormHistory = 100;  // bitsandbytes' percentile clipping window

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

// Percentile clipping as bitsandbytes does it: the squared norm enters slot
// step % 100 of the history (all slots on step 1); the gradient is scaled by
// clip / norm when its norm exceeds clip = sqrt(sorted history[percentile]).
double percentile_scale(torch::Tensor& history, int64_t step, double sum_sq, int64_t percentile) {
  float* h = history.data_ptr<float>();
  const float current = float(sum_sq);
  if (step == 1)
    std::fill(h, h + kGnormHistory, current);
  else
    h[step % kGnormHistory] = current;
  std::array<float, kGnormHistory> sorted;
  std::copy(h, h + kGnormHistory, sorted.begin());
  std::sort(sorted.begin(), sorted.end());
  const double clip = std::sqrt(double(sorted[size_t(percentile)]));
  const double norm = std::sqrt(double(current));
  return norm > clip ? clip / norm : 1.0;
}

}  // namespace

struct Optimizer8bit::Work {
  size_t group = 0;
  size_t index = 0;
  torch::Tensor param;
  torch::Tensor value;  // `param`, or its contiguous copy
  torch::Tensor grad;   // contiguous
  QuantizedParamState* state = nullptr;
  ParamBuffers* buffers = nullptr;
  StateSettings settings;
  kernels::OptimizerOperands op;
  kernels::GradientStats stats;
};

Optimizer8bit::Optimizer8bit(const char* name,
                             std::vector<torch::optim::OptimizerParamGroup> param_groups,
                             std::unique_ptr<torch::optim::OptimizerOptions> defaults,
                             std::shared_ptr<kernels::Backend> backend)
    : Optimizer(std::move(param_groups), std::move(defaults)),
      name_(name),
      backend_(backend ? std::move(backend) : kernels::make_backend({"cpu", -1, ""})) {
  for (bool is_signed : {false, true})
    qmap_[is_signed] = std::make_unique<quant::TensorBuffer>(
        *backend_, quant::create_dynamic_map(is_signed), /*upload=*/true);
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
  const auto make_state = [&](int which, torch::Tensor& values, torch::Tensor& absmax) {
    if (!quantized) {
      values = torch::zeros(param.sizes(), torch::kFloat32);
      return;
    }
    const torch::Tensor& map = qmap_[state_is_signed(rule(), which)]->tensor();
    const int zero = kernels::zero_index(map.data_ptr<float>(), 256);
    values = torch::full(param.sizes(), zero, torch::kUInt8);
    absmax = torch::zeros({blocks}, torch::kFloat32);
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
    state.gnorm_vec(torch::zeros({kGnormHistory}, torch::kFloat32));
  return state;
}

std::vector<Optimizer8bit::Work> Optimizer8bit::prepare() {
  check_groups();
  std::vector<Work> work;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& options = param_groups_[g].options();
    const auto& params = param_groups_[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const torch::Tensor& p = params[i];
      const torch::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      // Messages are built only when a check fails (no text per step).
      TORCH_CHECK(p.device().is_cpu(), name_, ": ", describe(g, i, p), " is on ", p.device(),
                  "; lowbit optimizers update CPU tensors (the OpenCL backend copies them "
                  "to its device in each step)");
      TORCH_CHECK(!grad.is_sparse(), name_, ": ", describe(g, i, p),
                  " has a sparse gradient; only dense gradients are supported (e.g. "
                  "torch::nn::Embedding without sparse)");
      TORCH_CHECK(p.scalar_type() == torch::kFloat32 || p.scalar_type() == torch::kFloat16 ||
                      p.scalar_type() == torch::kBFloat16,
                  name_, ": ", describe(g, i, p), " has dtype ", p.scalar_type(),
                  "; expected float32, float16 or bfloat16");
      TORCH_CHECK(grad.scalar_type() == p.scalar_type(), name_, ": the gradient of ",
                  describe(g, i, p),
                  " has dtype ", grad.scalar_type(), "; expected the parameter's dtype");
      TORCH_CHECK(grad.device().is_cpu() && grad.sizes() == p.sizes(), name_, ": the gradient of ",
                  describe(g, i, p), " has shape ", grad.sizes(), " on ", grad.device(),
                  "; expected the parameter's shape on the CPU");
      Work w;
      w.group = g;
      w.index = i;
      w.param = p;
      w.value = p.contiguous();
      w.grad = grad.contiguous();
      const StateKey key = state_key(p);
      w.settings = effective_settings(key, options);
      w.state = &state_for(key, p, w.settings, g, i);
      auto& buffers = buffers_[key];
      if (!buffers) buffers = std::make_unique<ParamBuffers>(*backend_);
      w.buffers = buffers.get();
      w.op = w.buffers->bind(w.value, w.grad, *w.state);
      w.op.rule = rule();
      w.op.param_type = quant::kernel_dtype(p.scalar_type(), "parameter");
      w.op.blocksize = int(w.settings.block_size);
      w.op.qmap1 = &qmap_[state_is_signed(rule(), 1)]->buffer();
      w.op.qmap2 = &qmap_[state_is_signed(rule(), 2)]->buffer();
      work.push_back(std::move(w));
    }
  }
  return work;
}

torch::Tensor Optimizer8bit::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  std::vector<Work> work = prepare();
  // One read of each gradient: its squared norm (percentile clipping) and
  // whether it is finite, for every parameter before any is updated.
  for (Work& w : work) {
    if (policy_ == NonFinitePolicy::SkipBlocks && w.settings.percentile_clipping == 100) continue;
    w.stats = backend_->gradient_stats(*w.op.grad, w.op.param_type, w.op.n, w.op.blocksize);
    if (w.stats.finite || policy_ == NonFinitePolicy::SkipBlocks) continue;
    TORCH_CHECK(policy_ != NonFinitePolicy::Raise, name_, ": the gradient of ",
                describe(w.group, w.index, w.param),
                " holds NaN or infinite values (or values whose squares overflow float32); "
                "nothing was updated. set_nonfinite_policy(NonFinitePolicy::SkipStep) skips "
                "such steps instead");
    ++nonfinite_.skipped_steps;
    return loss;
  }
  for (Work& w : work) update(w);
  return loss;
}

void Optimizer8bit::update(Work& w) {
  QuantizedParamState& state = *w.state;
  const auto& options = param_groups_[w.group].options();
  state.step(state.step() + 1);
  double gnorm_scale = 1.0;
  // Under SkipBlocks a non-finite gradient must not enter the norm history.
  if (w.settings.percentile_clipping < 100 && w.stats.finite)
    gnorm_scale = percentile_scale(state.gnorm_vec(), state.step(), w.stats.sum_sq,
                                   w.settings.percentile_clipping);
  const auto args_for = [&](double lr_scale) {
    kernels::OptimizerArgs args = step_args(options, state.step(), lr_scale);
    args.gnorm_scale = float(gnorm_scale);
    return args;
  };
  kernels::OptimizerArgs args = args_for(1.0);
  if (uses_trust_ratio() || w.settings.max_unorm > 0) {
    const kernels::UpdateNorms norms = backend_->optimizer_update_norms(w.op, args);
    const double param_norm = std::sqrt(norms.param_sq);
    const double update_norm = std::sqrt(norms.update_sq);
    double lr_scale = uses_trust_ratio() ? trust_ratio(options, param_norm, update_norm) : 1.0;
    const double lr = options.get_lr();
    if (w.settings.max_unorm > 0 && lr > 0 && std::isfinite(update_norm)) {
      // bitsandbytes' max_unorm: the norm of the step over lr (for Adam, of the
      // bias-corrected m / (sqrt(v) + eps)) is capped at max_unorm * ||p||.
      const double unorm = update_norm * std::fabs(double(args.lr_step)) * lr_scale / lr;
      const double cap = w.settings.max_unorm * param_norm;
      if (unorm > cap) lr_scale *= cap / unorm;
    }
    if (lr_scale != 1.0) args = args_for(lr_scale);
  }
  const size_t rejected = backend_->optimizer_update(w.op, args);
  w.buffers->finish(w.value);
  if (!w.value.is_same(w.param)) w.param.copy_(w.value);
  nonfinite_.skipped_blocks += int64_t(rejected);
  TORCH_CHECK(rejected == 0 || policy_ != NonFinitePolicy::Raise, name_, ": ", rejected,
              " block(s) of ", describe(w.group, w.index, w.param),
              " would have become NaN or infinite (the gradient is finite but the update "
              "overflows float32) and were left unchanged; the rest of the step was applied");
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
      item.second->download_states(static_cast<const QuantizedParamState&>(*it->second));
  }
}

void Optimizer8bit::save_extras(torch::serialize::OutputArchive& archive) const {
  archive.write("lowbit/skipped_steps", c10::IValue(nonfinite_.skipped_steps));
  archive.write("lowbit/skipped_blocks", c10::IValue(nonfinite_.skipped_blocks));
}

void Optimizer8bit::load_extras(torch::serialize::InputArchive& archive) {
  c10::IValue v;
  nonfinite_ = {};
  if (archive.try_read("lowbit/skipped_steps", v)) nonfinite_.skipped_steps = v.toInt();
  if (archive.try_read("lowbit/skipped_blocks", v)) nonfinite_.skipped_blocks = v.toInt();
  check_loaded_states();
}

void Optimizer8bit::check_loaded_states() const {
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& options = param_groups_[g].options();
    const auto& params = param_groups_[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const torch::Tensor& p = params[i];
      const StateKey key = state_key(p);
      const auto it = state_.find(key);
      if (it == state_.end()) continue;
      const auto& s = static_cast<const QuantizedParamState&>(*it->second);
      const std::string where = name_ + ": the loaded state of " + describe(g, i, p);
      const StateSettings settings = effective_settings(key, options);
      const bool quantized = settings.quantizes(p.numel());
      const int64_t blocks = settings.blocks(p.numel());
      const auto check = [&](const torch::Tensor& values, const torch::Tensor& absmax,
                             const char* name) {
        TORCH_CHECK(values.defined(), where, " has no ", name);
        TORCH_CHECK(values.numel() == p.numel(), where, ": ", name, " has ", values.numel(),
                    " elements; expected ", p.numel());
        TORCH_CHECK(values.scalar_type() == (quantized ? torch::kUInt8 : torch::kFloat32), where,
                    ": ", name, " has dtype ", values.scalar_type(), " but this optimizer uses ",
                    quantized ? "8-bit" : "32-bit",
                    " states for it (optim_bits, min_8bit_size, "
                    "override_config must match the run that saved it)");
        if (quantized)
          TORCH_CHECK(absmax.defined() && absmax.scalar_type() == torch::kFloat32 &&
                          absmax.numel() == blocks,
                      where, ": the absmax of ", name, " must be ", blocks,
                      " float32 values (block_size ", settings.block_size, ")");
      };
      check(s.state1(), s.absmax1(), "state1");
      if (has_state2(options)) check(s.state2(), s.absmax2(), "state2");
      TORCH_CHECK(s.step() >= 0, where, ": step is ", s.step());
      TORCH_CHECK(!s.gnorm_vec().defined() || (s.gnorm_vec().numel() == kGnormHistory &&
                                               s.gnorm_vec().scalar_type() == torch::kFloat32),
                  where, ": gnorm_vec must be ", kGnormHistory, " float32 values");
    }
  }
}

}  // namespace lowbit::optim
