// The per-parameter state of the 8-bit optimizers, in bitsandbytes' names:
// step count, state1 / state2 (uint8 codes of 8-bit states or float32 values),
// absmax1 / absmax2 (one float32 per block, 8-bit only) and gnorm_vec (the last
// 100 squared gradient norms, percentile clipping only). Tensors and scalars
// only, as libtorch's archive stores them.
#pragma once

#include <cstdint>

#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

namespace lowbit::optim {

struct QuantizedParamState
    : public torch::optim::OptimizerCloneableParamState<QuantizedParamState> {
  TORCH_ARG(int64_t, step) = 0;
  TORCH_ARG(torch::Tensor, state1);
  TORCH_ARG(torch::Tensor, state2) = {};
  TORCH_ARG(torch::Tensor, absmax1) = {};
  TORCH_ARG(torch::Tensor, absmax2) = {};
  TORCH_ARG(torch::Tensor, gnorm_vec) = {};

 public:
  // True when the states are 8-bit codes.
  bool quantized() const { return state1().defined() && state1().scalar_type() == torch::kUInt8; }
  // Bytes held by the state tensors.
  int64_t bytes() const;

  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  friend bool operator==(const QuantizedParamState& lhs, const QuantizedParamState& rhs);
};

}  // namespace lowbit::optim
