// The base of the five 8-bit optimizers: a torch::optim::Optimizer whose step
// runs one fused kernel per parameter (kernels/backend.h: CPU, OpenCL or CUDA)
// and keeps per-parameter states in QuantizedParamState, on the parameters'
// device. It owns what they share: state creation and layout, the step's
// decisions (percentile clipping, max_unorm and trust-ratio scaling, the
// non-finite gradient policy: made by the backend, so a CUDA step never waits
// for the host), save/load across devices and memory queries.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "kernels/backend.h"
#include "optim/param_buffers.h"
#include "optim/param_state.h"
#include "optim/state_key.h"
#include "optim/state_options.h"
#include "quant/tensor_buffer.h"

namespace lowbit::optim {

// What step() does when a gradient holds NaN or +-inf (or values so large
// that their squares overflow float32).
enum class NonFinitePolicy {
  // Default. No parameter, state or step count changes; the step is counted
  // in nonfinite_stats().skipped_steps (torch.cuda.amp.GradScaler's rule).
  // Costs one read of every gradient per step.
  SkipStep,
  // Throws before anything is updated, naming the parameter.
  Raise,
  // No gradient check: the kernels leave every block (block_size elements)
  // whose new values would not be finite unchanged and count it in
  // skipped_blocks; the rest of the step happens. The fastest policy.
  SkipBlocks,
};

struct NonFiniteStats {
  int64_t skipped_steps = 0;
  // Blocks left unchanged because their update was not finite (under every
  // policy: a finite gradient can still overflow a state).
  int64_t skipped_blocks = 0;
};

// Sums over whole tensors for an optimizer whose parameters are parts of larger tensors
// (dist::ZeroOptimizer's shards). step() decides percentile clipping from a gradient's squared
// norm, and LAMB's trust ratio and max_unorm from the squared norms of the update and the
// parameter; for a part those sums must be the whole tensor's, or the decision would change
// with the sharding. step() hands each part's sums to this and decides with the sums it gives
// back. Both calls happen once per step, in this order, even when no parameter has a gradient,
// so an implementation may be collective.
class WholeTensorSums {
 public:
  virtual ~WholeTensorSums() = default;
  // grad_sq[i]: the sum of g^2 over parts[i] (the parameters with percentile clipping);
  // replace it with the sum over the whole tensor parts[i] belongs to.
  virtual void gradient(const std::vector<torch::Tensor>& parts, std::vector<double>& grad_sq) = 0;
  // update_sq[i], param_sq[i]: the sums of u^2 and p^2 over parts[i] (the parameters whose rule
  // needs norms: LAMB, max_unorm); replace them likewise.
  virtual void update(const std::vector<torch::Tensor>& parts, std::vector<double>& update_sq,
                      std::vector<double>& param_sq) = 0;
};

// Per-parameter state layout, overriding the parameter's group: the role of
// bitsandbytes' GlobalOptimManager.override_config (e.g. keep an embedding's
// states at 32 bits). Set before the parameter's first step.
struct ParamOverride {
  std::optional<int64_t> optim_bits;
  std::optional<int64_t> block_size;
  std::optional<int64_t> min_8bit_size;

  // `settings` with the values set here in place of its own.
  StateSettings applied_to(StateSettings settings) const;
};

class Optimizer8bit : public torch::optim::Optimizer {
 public:
  torch::Tensor step(LossClosure closure = nullptr) override;

  void override_config(const torch::Tensor& param, const ParamOverride& config);

  // Bytes of optimizer state: all parameters, or one (0 before its first step).
  int64_t state_bytes() const;
  int64_t state_bytes(const torch::Tensor& param) const;

  // nullptr (the default): every parameter is a whole tensor, and step() reads no sum back.
  void set_whole_tensor_sums(std::shared_ptr<WholeTensorSums> sums) {
    whole_sums_ = std::move(sums);
  }

  void set_nonfinite_policy(NonFinitePolicy policy) { policy_ = policy; }
  NonFinitePolicy nonfinite_policy() const { return policy_; }
  // The counters live with the states; on a device this waits for the steps
  // queued so far.
  NonFiniteStats nonfinite_stats() const;
  // Sets the counters (dist::ZeroOptimizer restores a checkpoint's, which are the ranks' sums).
  void set_nonfinite_stats(const NonFiniteStats& stats);

  // The state of parameter `index` of group `group`, or nullptr before its first step. On a
  // device, call sync_state() first.
  const QuantizedParamState* param_state(size_t group, size_t index) const;
  // Makes `state` that parameter's state, checked against the parameter as load() checks a
  // loaded one (throws naming the parameter and what was expected) and moved to its device.
  void set_param_state(size_t group, size_t index, std::unique_ptr<QuantizedParamState> state);

  kernels::Backend& backend() const { return *backend_; }
  // The state settings of parameter group `group` (before per-parameter overrides).
  const StateSettings& group_settings(size_t group) const {
    return settings(param_groups_.at(group).options());
  }

  // Where the backend keeps states apart from the state() tensors (OpenCL, and
  // the step counts on any device) this copies them into state(); save() does
  // it itself. Waits for the device. A no-op on the CPU.
  void sync_state() const;

 protected:
  // `name` prefixes error messages ("AdamW8bit"); `backend` runs the kernels.
  // When null, the parameters' device decides: the CPU backend for CPU
  // parameters, the CUDA backend of their device for CUDA parameters (build
  // the optimizer after moving the model). All parameters share one device.
  Optimizer8bit(const char* name, std::vector<torch::optim::OptimizerParamGroup> param_groups,
                std::unique_ptr<torch::optim::OptimizerOptions> defaults,
                std::shared_ptr<kernels::Backend> backend);

  // ---- what each optimizer supplies ----
  virtual kernels::OptimizerRule rule() const = 0;
  virtual const StateSettings& settings(const torch::optim::OptimizerOptions& group) const = 0;
  // Throws unless the group's hyper-parameters are valid.
  virtual void check_options(const torch::optim::OptimizerOptions& group) const = 0;
  virtual bool has_state2(const torch::optim::OptimizerOptions& group) const = 0;
  // The rule and hyper-parameters of a group (kernels/step_rules.h); the base
  // adds percentile clipping and max_unorm from the state settings.
  virtual kernels::StepHparams hparams(const torch::optim::OptimizerOptions& group) const = 0;

  // Checks every group; derived constructors call it (virtual calls do not
  // reach them from this constructor).
  void check_groups() const;

  // save()/load() of an optimizer whose options class is Options.
  template <typename Options>
  void save_as(torch::serialize::OutputArchive& archive) const;
  template <typename Options>
  void load_as(torch::serialize::InputArchive& archive);

 private:
  struct Work;
  // The step's operands; the keys of the states it created go to `created`.
  std::vector<Work> prepare(std::vector<StateKey>& created);
  // Undoes a step that failed before it changed anything: drops the states it
  // created (and their buffers), so the next step starts as a first one.
  void forget_states(const std::vector<StateKey>& created);
  // Has the backend build and allocate what the updates of `work` need
  // (Backend::ready_optimizer_update); throws naming the parameter.
  void ready_updates(const std::vector<Work>& work);
  // Throws unless `p` (and its gradient) is where the backend works.
  void check_device(const torch::Tensor& p, size_t group, size_t index) const;
  // The per-step buffers on the backend: `count` slots and the flags.
  void ensure_step_buffers(size_t count);
  kernels::StepFlags read_flags() const;
  // The state of parameter `index` of group `group` (`param`, keyed `key`),
  // created on its first step; throws if it no longer fits `settings`.
  QuantizedParamState& state_for(const StateKey& key, const torch::Tensor& param,
                                 const StateSettings& settings, size_t group, size_t index);
  StateSettings effective_settings(const StateKey& key,
                                   const torch::optim::OptimizerOptions& group) const;
  void save_extras(torch::serialize::OutputArchive& archive) const;
  void load_extras(torch::serialize::InputArchive& archive);
  // Throws naming the parameter unless each loaded state fits it; moves the
  // states to the parameters' device.
  void adopt_loaded_states();
  void adopt_loaded_state(size_t group, size_t index);
  // Under whole_sums_, replaces the parts' sums in the step slots by the whole tensors': the
  // gradient's (percentile clipping) before optimizer_prepare, or with `update` the update's
  // and the parameter's (LAMB, max_unorm) before optimizer_scale. A no-op without whole_sums_.
  void exchange_sums(const std::vector<Work>& work, bool update);

  std::string name_;
  std::shared_ptr<kernels::Backend> backend_;
  // Where the parameters (and so the states) live.
  torch::Device device_ = torch::kCPU;
  NonFinitePolicy policy_ = NonFinitePolicy::SkipStep;
  std::shared_ptr<WholeTensorSums> whole_sums_;
  std::unordered_map<StateKey, ParamOverride> overrides_;
  mutable std::unordered_map<StateKey, std::unique_ptr<ParamBuffers>> buffers_;
  // [0] unsigned, [1] signed dynamic map, on the backend, and their entries
  // of smallest magnitude (the code of a zero state).
  std::unique_ptr<quant::TensorBuffer> qmap_[2];
  int zero_code_[2] = {0, 0};
  // StepSlot per parameter of a step, and the StepFlags (skip decision,
  // skipped-step and block counters), on the backend. On the CPU the flags
  // are host memory: `host_flags_`, wrapped.
  std::unique_ptr<kernels::Buffer> slots_, flags_;
  kernels::StepFlags host_flags_{};
  // Empty, or why the states no longer match the parameters: a step failed
  // after optimizer_prepare had begun changing step counts, states and
  // parameters. step() refuses to run until load() replaces the states.
  std::string broken_;
};

template <typename Options>
void Optimizer8bit::save_as(torch::serialize::OutputArchive& archive) const {
  sync_state();
  torch::optim::serialize<QuantizedParamState, Options>(archive, *this);
  save_extras(archive);
}

template <typename Options>
void Optimizer8bit::load_as(torch::serialize::InputArchive& archive) {
  torch::optim::serialize<QuantizedParamState, Options>(archive, *this);
  // libtorch restores the states only; restore each group's options too, as
  // torch.optim's load_state_dict does (learning-rate schedules resume).
  torch::serialize::InputArchive groups;
  archive.read("param_groups", groups);
  for (size_t i = 0; i < param_groups_.size(); ++i) {
    torch::serialize::InputArchive group, options;
    groups.read("param_groups/" + std::to_string(i), group);
    group.read("options", options);
    auto loaded = std::make_unique<Options>(0.0);
    loaded->serialize(options);
    param_groups_[i].set_options(std::move(loaded));
  }
  load_extras(archive);
}

}  // namespace lowbit::optim
