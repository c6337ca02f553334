#include "optim/param_buffers.h"

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
  if (auto alias = backend_.wrap_host(t.data_ptr(), bytes)) {
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

kernels::OptimizerOperands ParamBuffers::bind(const torch::Tensor& value, const torch::Tensor& grad,
                                              const QuantizedParamState& state) {
  kernels::OptimizerOperands op;
  op.n = size_t(value.numel());
  op.param = bind(param_, value, true);
  op.grad = bind(grad_, grad, true);
  op.quantized = state.quantized();
  op.state1 = bind(state1_, state.state1(), false);
  op.absmax1 = bind(absmax1_, state.absmax1(), false);
  op.state2 = bind(state2_, state.state2(), false);
  op.absmax2 = bind(absmax2_, state.absmax2(), false);
  return op;
}

void ParamBuffers::finish(const torch::Tensor& value) {
  if (!param_.aliased) backend_.read(*param_.buffer, value.data_ptr(), bytes_of(value));
}

void ParamBuffers::download_states(const QuantizedParamState& state) {
  const auto copy_back = [&](const Mirror& m, const torch::Tensor& t) {
    if (!t.defined() || !m.buffer || m.aliased || m.impl != t.unsafeGetTensorImpl()) return;
    backend_.read(*m.buffer, t.data_ptr(), bytes_of(t));
  };
  copy_back(state1_, state.state1());
  copy_back(absmax1_, state.absmax1());
  copy_back(state2_, state.state2());
  copy_back(absmax2_, state.absmax2());
}

}  // namespace lowbit::optim
