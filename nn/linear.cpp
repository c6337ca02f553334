#include "nn/linear.h"

#include "nn/linear_like.h"

namespace lowbit::nn {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features)
    : LinearImpl(torch::nn::LinearOptions(in_features, out_features)) {}

LinearImpl::LinearImpl(const torch::nn::LinearOptions& options)
    : LinearImpl(torch::nn::Linear(options)) {}

LinearImpl::LinearImpl(torch::nn::Linear linear) : lora::InPlaceLayer("lowbit::nn::Linear") {
  TORCH_CHECK(!linear.is_empty(), "lowbit::nn::Linear: the torch::nn::Linear is empty (nullptr)");
  set_impl(linear.ptr());
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) { return forward_linear(*this, x); }

int64_t LinearImpl::in_features() const { return linear_shape(*impl()).in_features; }
int64_t LinearImpl::out_features() const { return linear_shape(*impl()).out_features; }
bool LinearImpl::has_bias() const { return linear_shape(*impl()).bias; }

torch::nn::LinearImpl* LinearImpl::as_float_linear() {
  return dynamic_cast<torch::nn::LinearImpl*>(impl().get());
}

void LinearImpl::pretty_print(std::ostream& stream) const {
  stream << "lowbit::nn::Linear(";
  impl()->pretty_print(stream);
  stream << ")";
}

}  // namespace lowbit::nn
