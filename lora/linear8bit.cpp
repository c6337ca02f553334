#include "lora/linear8bit.h"

#include <torch/autograd.h>

#include <vector>

#include "quant/int8.h"
#include "quant/tensor_buffer.h"

namespace lowbit::lora {

// The weight as buffers of a backend (the tensors themselves where the
// backend reaches them), with the row sums the CPU's VNNI core needs, the
// identity of the tensors it was made from, and the dequantized cache.
struct Linear8bitImpl::Binding {
  std::shared_ptr<kernels::Backend> backend;
  torch::Tensor weight, scb, row_sums;  // handles of their own on the bound data
  std::unique_ptr<quant::TensorBuffer> weight_buffer, scb_buffer, sums_buffer;
  kernels::WeightInt8 desc;
  const void* weight_data = nullptr;
  const void* scb_data = nullptr;
  int64_t weight_version = 0, scb_version = 0;
  torch::Tensor cache;  // float32 [out, in] when use_cache built it

  bool matches(const torch::Tensor& w, const torch::Tensor& s) const {
    return w.data_ptr() == weight_data && s.data_ptr() == scb_data &&
           w._version() == weight_version && s._version() == scb_version;
  }
};

namespace {

void check_weight(const torch::Tensor& weight, const torch::Tensor& scb, const char* what) {
  TORCH_CHECK(weight.defined() && weight.scalar_type() == torch::kInt8 && weight.dim() == 2 &&
                  weight.size(0) > 0 && weight.size(1) > 0,
              what, ": the weight must be int8 [out_features, in_features], got ",
              weight.defined() ? c10::toString(weight.scalar_type()) : "undefined", " ",
              weight.defined() ? weight.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(size_t(weight.size(1)) <= kernels::kMaxInt8InFeatures, what, ": in_features ",
              weight.size(1), " exceeds ", kernels::kMaxInt8InFeatures,
              " (int32 sums of int8 products could overflow)");
  TORCH_CHECK(scb.defined() && scb.scalar_type() == torch::kFloat32 && scb.dim() == 1 &&
                  scb.size(0) == weight.size(0),
              what, ": SCB must be float32 [", weight.size(0),
              "] (one absmax per output row), got ",
              scb.defined() ? c10::toString(scb.scalar_type()) : "undefined", " ",
              scb.defined() ? scb.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(scb.device() == weight.device(), what, ": SCB is on ", scb.device(),
              " but the weight is on ", weight.device());
}

// y = x W^T + bias for x [m, in] float32, through the backend's gemm_int8,
// with LLM.int8()'s outlier columns (|x| >= threshold anywhere in the column)
// zeroed there and multiplied in float instead.
torch::Tensor int8_forward(const torch::Tensor& x, const torch::Tensor& bias,
                           const Linear8bitImpl::Binding& b, double threshold) {
  torch::Tensor main = x, cols;
  if (threshold > 0.0) {
    const torch::Tensor outlier = (x.abs() >= threshold).any(0);
    if (outlier.any().item<bool>()) {
      cols = outlier.nonzero().reshape({-1});
      main = x.index_fill(1, cols, 0.0);
    }
  }
  const int64_t m = x.size(0);
  torch::Tensor y = torch::empty({m, int64_t(b.desc.out_features)}, x.options());
  kernels::Backend& be = *b.backend;
  quant::TensorBuffer xb(be, main, true), yb(be, y, false);
  std::unique_ptr<quant::TensorBuffer> bb;
  if (bias.numel()) bb = std::make_unique<quant::TensorBuffer>(be, bias, true);
  be.gemm_int8(xb.buffer(), size_t(m), b.desc, bb ? &bb->buffer() : nullptr, yb.buffer());
  yb.download();
  if (cols.defined()) {
    const torch::Tensor w_cols =
        quant::dequantize_int8_rowwise(b.weight.index_select(1, cols), b.scb);
    y.addmm_(x.index_select(1, cols), w_cols.t());
  }
  return y;
}

// The binding rides as a raw pointer (forward runs inside apply, while the
// caller holds it); backward needs only the saved tensors.
struct Matmul8bitFunction : torch::autograd::Function<Matmul8bitFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& bias, const torch::Tensor& weight,
                               const torch::Tensor& scb, const torch::Tensor& cache,
                               const Linear8bitImpl::Binding* binding, double threshold) {
    ctx->save_for_backward({weight, scb, cache});
    if (cache.numel()) return torch::linear(x, cache, bias.numel() ? bias : torch::Tensor());
    return int8_forward(x, bias, *binding, threshold);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& dy = grads[0];
    torch::Tensor dx, dbias;
    if (ctx->needs_input_grad(0)) {
      const torch::Tensor w =
          saved[2].numel() ? saved[2] : quant::dequantize_int8_rowwise(saved[0], saved[1]);
      dx = dy.mm(w);
    }
    if (ctx->needs_input_grad(1)) dbias = dy.sum(0);
    // No gradient for the weight, SCB, cache, binding or threshold.
    torch::autograd::variable_list grads_out(7);
    grads_out[0] = dx;
    grads_out[1] = dbias;
    return grads_out;
  }
};

}  // namespace

Linear8bitImpl::Linear8bitImpl(const torch::nn::Linear& linear, const Linear8bitOptions& options)
    : options_(options) {
  TORCH_CHECK(!linear.is_empty(), "Linear8bit: the Linear to quantize is empty (nullptr)");
  TORCH_CHECK(linear->weight.numel() > 0, "Linear8bit: the Linear's weight is empty (released by ",
              "an earlier conversion?)");
  std::tie(weight_, scb_) = quant::quantize_int8_rowwise(linear->weight.detach());
  if (linear->bias.defined()) bias = linear->bias.detach().clone();
  register_state();
}

Linear8bitImpl::Linear8bitImpl(torch::Tensor weight, torch::Tensor scb, torch::Tensor bias_,
                               const Linear8bitOptions& options)
    : options_(options) {
  check_weight(weight, scb, "Linear8bit");
  weight_ = weight.detach().contiguous();
  scb_ = scb.detach().contiguous();
  if (bias_.defined()) bias = bias_.detach();
  register_state();
}

void Linear8bitImpl::register_state() {
  TORCH_CHECK(options_.threshold() >= 0.0, "Linear8bit: threshold must be >= 0 (0 turns the ",
              "outlier path off), got ", options_.threshold());
  if (bias.defined()) {
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == out_features(), "Linear8bit: bias has shape ",
                bias.sizes(), "; expected [", out_features(), "]");
    TORCH_CHECK(bias.is_floating_point(), "Linear8bit: bias has dtype ", bias.scalar_type(),
                "; expected a floating-point type");
    bias = register_parameter("bias", bias, /*requires_grad=*/false);
  }
  // Buffers, so that named_buffers(), Module::to and memory accounting see them.
  weight_ = register_buffer("weight", weight_);
  scb_ = register_buffer("SCB", scb_);
}

std::shared_ptr<Linear8bitImpl::Binding> Linear8bitImpl::binding() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (binding_ && binding_->matches(weight_, scb_)) return binding_;
  check_weight(weight_, scb_, "Linear8bit");
  auto b = std::make_shared<Binding>();
  b->backend =
      options_.backend() ? options_.backend() : quant::backend_for(weight_, "Linear8bit weight");
  kernels::Backend& be = *b->backend;
  b->weight = weight_.detach().contiguous();
  b->scb = scb_.detach().contiguous();
  b->row_sums = b->weight.sum(1, /*keepdim=*/false, torch::kInt32).contiguous();
  b->weight_buffer = std::make_unique<quant::TensorBuffer>(be, b->weight, true);
  b->scb_buffer = std::make_unique<quant::TensorBuffer>(be, b->scb, true);
  b->sums_buffer = std::make_unique<quant::TensorBuffer>(be, b->row_sums, true);
  b->desc = {&b->weight_buffer->buffer(), &b->scb_buffer->buffer(), &b->sums_buffer->buffer(),
             size_t(out_features()), size_t(in_features())};
  b->weight_data = weight_.data_ptr();
  b->scb_data = scb_.data_ptr();
  b->weight_version = weight_._version();
  b->scb_version = scb_._version();
  binding_ = b;
  return b;
}

torch::Tensor Linear8bitImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == in_features(),
              "Linear8bit: input has shape ", x.defined() ? x.sizes() : torch::IntArrayRef{},
              "; expected [..., ", in_features(), "]");
  const auto in_dtype = x.scalar_type();
  TORCH_CHECK(
      in_dtype == torch::kFloat32 || in_dtype == torch::kBFloat16 || in_dtype == torch::kFloat16,
      "Linear8bit: input has dtype ", in_dtype, "; expected float32, bfloat16 or float16");
  TORCH_CHECK(x.device() == weight_.device(), "Linear8bit: input is on ", x.device(),
              " but the int8 weight is on ", weight_.device(),
              "; move the input (or the layer, with Module::to) to one device");
  const std::shared_ptr<Binding> b = binding();
  torch::Tensor cache = torch::empty({0}, x.options().dtype(torch::kFloat32));
  if (options_.use_cache()) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!b->cache.defined()) b->cache = quant::dequantize_int8_rowwise(b->weight, b->scb);
    cache = b->cache;
  }
  const torch::Tensor x2 = x.reshape({-1, in_features()}).to(torch::kFloat32).contiguous();
  // libtorch 1.13's Function::apply records every tensor input's device, which
  // an undefined tensor lacks: "no bias" travels as an empty tensor instead.
  const torch::Tensor b32 =
      bias.defined() ? bias.to(torch::kFloat32).contiguous() : torch::empty({0}, x2.options());
  torch::Tensor y =
      Matmul8bitFunction::apply(x2, b32, b->weight, b->scb, cache, b.get(), options_.threshold());
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = out_features();
  return y.view(sizes).to(in_dtype);
}

torch::Tensor Linear8bitImpl::dequantized_weight() const {
  return quant::dequantize_int8_rowwise(weight_, scb_);
}

void Linear8bitImpl::set_quantized_weight(torch::Tensor weight, torch::Tensor scb) {
  check_weight(weight, scb, "Linear8bit::set_quantized_weight");
  TORCH_CHECK(weight.sizes() == weight_.sizes(), "Linear8bit::set_quantized_weight: the new ",
              "weight has shape ", weight.sizes(), "; this layer is ", weight_.sizes());
  torch::NoGradGuard no_grad;
  // set_ keeps the registered buffer objects and points them at the new data
  // (the binding notices the new data pointers and rebinds).
  weight_.set_(weight.contiguous());
  scb_.set_(scb.contiguous());
}

quant::StateDict Linear8bitImpl::bnb_state_dict(const std::string& prefix) const {
  quant::StateDict sd = quant::to_bnb_int8(weight_, scb_, prefix);
  if (bias.defined()) sd[prefix + "bias"] = bias.detach();
  return sd;
}

quant::StorageReport Linear8bitImpl::storage() const {
  quant::StorageReport r;
  r.params = weight_.numel();
  r.code_bytes = weight_.numel();
  r.absmax_bytes = scb_.numel() * int64_t(sizeof(float));
  return r;
}

int64_t Linear8bitImpl::cache_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return binding_ && binding_->cache.defined() ? binding_->cache.numel() * 4 : 0;
}

void Linear8bitImpl::clear_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (binding_) binding_->cache = torch::Tensor();
}

Linear8bit linear8bit_from_bnb(const quant::StateDict& entries, const std::string& prefix,
                               const std::string& what, const Linear8bitOptions& options) {
  auto [weight, scb] = quant::from_bnb_int8(entries, prefix, what);
  auto bias = entries.find(prefix + "bias");
  return Linear8bit(weight, scb, bias == entries.end() ? torch::Tensor() : bias->second, options);
}

void Linear8bitImpl::pretty_print(std::ostream& stream) const {
  stream << "lowbit::lora::Linear8bit(in_features=" << in_features()
         << ", out_features=" << out_features() << ", bias=" << (bias.defined() ? "true" : "false")
         << ", threshold=" << options_.threshold()
         << ", use_cache=" << (options_.use_cache() ? "true" : "false") << ")";
}

}  // namespace lowbit::lora
