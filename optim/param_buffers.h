// The kernels-side operands of one parameter on the optimizer's backend. Where
// the backend reaches the tensors' memory (CPU tensors on the CPU backend or on
// an OpenCL device that shares host memory, CUDA tensors on their device's CUDA
// backend) every buffer wraps its tensor: no copies. Otherwise (OpenCL on a
// discrete device) the states are resident on the device: uploaded
// when their tensors change (first step, load, an in-place edit) and copied
// back by download_states(); the parameter and its gradient cross in each
// step. The step count follows the same rule: the state's own int64 where the
// host memory is reachable, a device copy otherwise.
#pragma once

#include <memory>

#include <torch/types.h>

#include "kernels/backend.h"
#include "optim/param_state.h"

namespace lowbit::optim {

class ParamBuffers {
 public:
  explicit ParamBuffers(kernels::Backend& backend) : backend_(backend) {}

  // Buffers for this step: `value` and `grad` are contiguous tensors of the
  // parameter's dtype; the states are the tensors of `state`.
  kernels::OptimizerOperands bind(const torch::Tensor& value, const torch::Tensor& grad,
                                  QuantizedParamState& state);
  // The int64 step count of `state` and its gradient-norm history (null when
  // the state keeps none), as bound by the last bind().
  kernels::Buffer* step() { return step_.buffer.get(); }
  kernels::Buffer* history() { return history_.buffer.get(); }
  // Copies the updated parameter into `value` (no-op when aliased).
  void finish(const torch::Tensor& value);
  // Copies device-resident states and the step count into `state` (no-op
  // when aliased).
  void download_states(QuantizedParamState& state);

 private:
  // A tensor's buffer. On a device, `impl`, `data` and `version` identify the
  // tensor contents the buffer holds, so an unchanged state is not uploaded.
  struct Mirror {
    std::unique_ptr<kernels::Buffer> buffer;
    bool aliased = false;  // the buffer is the tensor's own memory
    const void* impl = nullptr;
    const void* data = nullptr;
    int64_t version = -1;
  };
  // Binds `m` to `t`; on a device uploads `t` unless `m` already holds it (or
  // always, when `always_upload`). Returns nullptr for an undefined tensor.
  kernels::Buffer* bind(Mirror& m, const torch::Tensor& t, bool always_upload);
  // The step count: `owner` and `synced` say which state and value the
  // device copy was made from.
  struct StepMirror {
    std::unique_ptr<kernels::Buffer> buffer;
    bool aliased = false;
    const QuantizedParamState* owner = nullptr;
    int64_t synced = 0;
  };
  void bind_step(QuantizedParamState& state);

  kernels::Backend& backend_;
  Mirror param_, grad_, state1_, absmax1_, state2_, absmax2_, history_;
  StepMirror step_;
};

}  // namespace lowbit::optim
