#include "optim/param_buffers.h"

#include "quant/tensor_buffer.h"

namespace lowbit::optim {
namespace {

size_t bytes_of(const torch::Tensor& t) { return size_t(t.numel()) * t.element_size(); }

}  // namespace

kernels::Buffer* ParamBuffers::bind(Mirror& m, const torch::Tensor& t, bool always_upload) {
  if (!t.defined()) {
    m = Mirror{};
    return nullptr;
  }
  const size_t bytes = bytes_of(t);
  if (auto alias = backend_.wrap(t.data_ptr(), bytes, quant::location_of(t))) {
    m.buffer = std::move(alias);
    m.aliased = true;
    return m.buffer.get();
  }
  if (!m.buffer || m.aliased || m.buffer->bytes() != bytes) {
    m.aliased = false;
    m.buffer = backend_.allocate(bytes);
    m.impl = nullptr;
  }
  const bool holds = m.impl == t.unsafeGetTensorImpl() && m.data == t.data_ptr() &&
                     m.version == int64_t(t._version());
  if (always_upload || !holds) {
    backend_.write(*m.buffer, t.data_ptr(), bytes);
    m.impl = t.unsafeGetTensorImpl();
    m.data = t.data_ptr();
    m.version = int64_t(t._version());
  }
  return m.buffer.get();
}

void ParamBuffers::bind_step(QuantizedParamState& state) {
  int64_t* host = &state.step();
  if (auto alias = backend_.wrap(host, sizeof(int64_t), kernels::Location::host())) {
    step_.buffer = std::move(alias);
    step_.aliased = true;
    return;
  }
  if (!step_.buffer || step_.aliased) {
    step_.buffer = backend_.allocate(sizeof(int64_t));
    step_.aliased = false;
    step_.owner = nullptr;
  }
  // The device copy runs ahead of state.step() between downloads; a new state
  // object (load) or a value set by hand is uploaded.
  if (step_.owner != &state || step_.synced != *host) {
    backend_.write(*step_.buffer, host, sizeof(int64_t));
    step_.owner = &state;
    step_.synced = *host;
  }
}

kernels::OptimizerOperands ParamBuffers::bind(const torch::Tensor& value, const torch::Tensor& grad,
                                              QuantizedParamState& state) {
  kernels::OptimizerOperands op;
  op.n = size_t(value.numel());
  op.param = bind(param_, value, true);
  op.grad = bind(grad_, grad, true);
  op.quantized = state.quantized();
  op.state1 = bind(state1_, state.state1(), false);
  op.absmax1 = bind(absmax1_, state.absmax1(), false);
  op.state2 = bind(state2_, state.state2(), false);
  op.absmax2 = bind(absmax2_, state.absmax2(), false);
  bind(history_, state.gnorm_vec(), false);
  bind_step(state);
  return op;
}

void ParamBuffers::finish(const torch::Tensor& value) {
  if (!param_.aliased) backend_.read(*param_.buffer, value.data_ptr(), bytes_of(value));
}

void ParamBuffers::download_states(QuantizedParamState& state) {
  const auto copy_back = [&](const Mirror& m, const torch::Tensor& t) {
    if (!t.defined() || !m.buffer || m.aliased || m.impl != t.unsafeGetTensorImpl()) return;
    backend_.read(*m.buffer, t.data_ptr(), bytes_of(t));
  };
  copy_back(state1_, state.state1());
  copy_back(absmax1_, state.absmax1());
  copy_back(state2_, state.state2());
  copy_back(absmax2_, state.absmax2());
  copy_back(history_, state.gnorm_vec());
  if (step_.buffer && !step_.aliased && step_.owner == &state) {
    backend_.read(*step_.buffer, &state.step(), sizeof(int64_t));
    step_.synced = state.step();
  }
}

}  // namespace lowbit::optim
