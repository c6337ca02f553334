// The kernels-side operands of one parameter on the optimizer's backend. On a
// host-memory backend (CPU) every buffer aliases its tensor: no copies. On a
// device (OpenCL) the states are resident: uploaded when their tensors change
// (first step, load, an in-place edit) and copied back by download_states();
// the parameter and its gradient cross in each step.
#pragma once

#include <memory>

#include <torch/types.h>

#include "kernels/backend.h"
#include "optim/param_state.h"

namespace lowbit::optim {

class ParamBuffers {
 public:
  explicit ParamBuffers(kernels::Backend& backend) : backend_(backend) {}

  // Buffers for this step: `value` and `grad` are contiguous CPU tensors of
  // the parameter's dtype; the states are the tensors of `state`.
  kernels::OptimizerOperands bind(const torch::Tensor& value, const torch::Tensor& grad,
                                  const QuantizedParamState& state);
  // Copies the updated parameter into `value` (no-op on the CPU).
  void finish(const torch::Tensor& value);
  // Copies device-resident states into the tensors of `state` (no-op on the CPU).
  void download_states(const QuantizedParamState& state);

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

  kernels::Backend& backend_;
  Mirror param_, grad_, state1_, absmax1_, state2_, absmax2_;
};

}  // namespace lowbit::optim
