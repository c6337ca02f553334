#include "optim/param_state.h"

#include <torch/optim/serialize.h>

namespace lowbit::optim {
namespace {

int64_t tensor_bytes(const torch::Tensor& t) {
  return t.defined() ? t.numel() * int64_t(t.element_size()) : 0;
}

bool same(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  return !a.defined() ||
         (a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && torch::equal(a, b));
}

}  // namespace

int64_t QuantizedParamState::bytes() const {
  return tensor_bytes(state1()) + tensor_bytes(state2()) + tensor_bytes(absmax1()) +
         tensor_bytes(absmax2()) + tensor_bytes(gnorm_vec());
}

// States are written as CPU tensors, whatever device they live on, so that a
// file saved on a GPU loads on a machine without one (and the other way
// round); load() moves them to the parameters' device.
void QuantizedParamState::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(step);
  const auto write = [&](const char* name, const torch::Tensor& t) {
    if (t.defined()) archive.write(name, c10::IValue(t.cpu()));
  };
  write("state1", state1());
  write("state2", state2());
  write("absmax1", absmax1());
  write("absmax2", absmax2());
  write("gnorm_vec", gnorm_vec());
}

void QuantizedParamState::serialize(torch::serialize::InputArchive& archive) {
  auto ivalue = c10::IValue();
  TORCH_CHECK(archive.try_read("step", ivalue), "optimizer state has no 'step'");
  step(ivalue.toInt());
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, state1);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, state2);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, absmax1);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, absmax2);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, gnorm_vec);
}

bool operator==(const QuantizedParamState& lhs, const QuantizedParamState& rhs) {
  return lhs.step() == rhs.step() && same(lhs.state1(), rhs.state1()) &&
         same(lhs.state2(), rhs.state2()) && same(lhs.absmax1(), rhs.absmax1()) &&
         same(lhs.absmax2(), rhs.absmax2()) && same(lhs.gnorm_vec(), rhs.gnorm_vec());
}

}  // namespace lowbit::optim
