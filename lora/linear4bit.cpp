#include "lora/linear4bit.h"

#include <torch/nn/modules/linear.h>

#include "lora/matmul_4bit.h"
#include "quant/quantize.h"

namespace lowbit::lora {
namespace {

void check_compute_dtype(torch::ScalarType t) {
  TORCH_CHECK(t == torch::kFloat32 || t == torch::kFloat16 || t == torch::kBFloat16,
              "Linear4bit: compute_dtype ", t,
              " is not supported; expected float32, float16 or bfloat16");
}

// The state with its own tensor handles (sharing storage): set_quantized_weight
// updates the layer's handles in place and must not reach the caller's.
quant::QuantState own_handles(const quant::QuantState& s) {
  quant::QuantState out = s;
  out.absmax = s.absmax.detach();
  if (s.nested) {
    out.nested = std::make_shared<quant::QuantState>(*s.nested);
    out.nested->absmax = s.nested->absmax.detach();
  }
  return out;
}

const torch::nn::Linear& non_empty(const torch::nn::Linear& linear) {
  TORCH_CHECK(!linear.is_empty(), "Linear4bit: the Linear to quantize is empty (nullptr)");
  return linear;
}

}  // namespace

Linear4bitImpl::Linear4bitImpl(const torch::nn::Linear& linear, const Linear4bitOptions& options)
    : Linear4bitImpl(non_empty(linear)->weight.detach(),
                     linear->bias.defined() ? linear->bias.detach().clone() : torch::Tensor(),
                     options) {}

Linear4bitImpl::Linear4bitImpl(const torch::Tensor& weight, const torch::Tensor& bias_,
                               const Linear4bitOptions& options)
    : options_(options) {
  TORCH_CHECK(weight.defined() && weight.dim() == 2, "Linear4bit: the weight to quantize must be ",
              "[out_features, in_features], got ",
              weight.defined() ? weight.sizes() : torch::IntArrayRef{});
  quant::Quantize4bitOptions q;
  q.format = options.format();
  q.blocksize = options.blocksize();
  q.double_quant = options.double_quant();
  q.nested_blocksize = options.nested_blocksize();
  const torch::Tensor w = weight.detach();
  auto quantized = options.backend() ? quant::quantize_4bit(w, q, *options.backend())
                                     : quant::quantize_4bit(w, q);
  packed_ = quantized.first;
  state_ = quantized.second;
  if (bias_.defined()) bias = bias_.detach();
  register_state();
}

Linear4bitImpl::Linear4bitImpl(torch::Tensor packed, quant::QuantState state, torch::Tensor bias_,
                               const Linear4bitOptions& options)
    : options_(options) {
  check_weight_4bit(packed, state, "Linear4bit");
  packed_ = packed.detach().contiguous();
  state_ = own_handles(state);
  if (bias_.defined()) bias = bias_.detach();
  register_state();
}

void Linear4bitImpl::register_state() {
  check_compute_dtype(options_.compute_dtype());
  if (bias.defined()) {
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == out_features(), "Linear4bit: bias has shape ",
                bias.sizes(), "; expected [", out_features(), "]");
    TORCH_CHECK(bias.is_floating_point(), "Linear4bit: bias has dtype ", bias.scalar_type(),
                "; expected a floating-point type");
    bias = register_parameter("bias", bias, /*requires_grad=*/false);
  }
  // Buffers, so that named_buffers() and memory accounting see the codes.
  // Module names may not contain '.', hence "weight_absmax" for bitsandbytes'
  // "weight.absmax" (the file layout, bnb_state_dict, uses the dotted names).
  packed_ = register_buffer("weight", packed_);
  state_.absmax = register_buffer("weight_absmax", state_.absmax);
  if (state_.nested) state_.nested->absmax = register_buffer("weight_nested_absmax", state_.nested->absmax);
  kernel_weight_ = c10::make_intrusive<Kernel4bitWeight>(options_.backend());
  kernel_weight_->sync(packed_, state_);
}

torch::Tensor Linear4bitImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == in_features(),
              "Linear4bit: input has shape ", x.defined() ? x.sizes() : torch::IntArrayRef{},
              "; expected [..., ", in_features(), "]");
  const auto in_dtype = x.scalar_type();
  TORCH_CHECK(in_dtype == torch::kFloat32 || in_dtype == torch::kBFloat16 ||
                  in_dtype == torch::kFloat16,
              "Linear4bit: input has dtype ", in_dtype,
              "; expected float32, bfloat16 or float16");
  kernel_weight_->sync(packed_, state_);
  const auto dtype = options_.compute_dtype();
  const torch::Tensor b = bias.defined() ? bias.to(dtype) : torch::Tensor();
  return matmul_4bit(x.to(dtype), kernel_weight_, b, options_.int8_gemv()).to(in_dtype);
}

torch::Tensor Linear4bitImpl::dequantized_weight() const {
  return options_.backend() ? quant::dequantize_4bit(packed_, state_, *options_.backend())
                            : quant::dequantize_4bit(packed_, state_);
}

void Linear4bitImpl::set_quantized_weight(torch::Tensor packed, quant::QuantState state) {
  // Checked in full before anything is replaced: a refused weight leaves the
  // layer as it was.
  check_weight_4bit(packed, state, "Linear4bit::set_quantized_weight");
  TORCH_CHECK(state.shape == state_.shape, "Linear4bit::set_quantized_weight: the new weight has ",
              "shape ", torch::IntArrayRef(state.shape), "; this layer is ",
              torch::IntArrayRef(state_.shape));
  TORCH_CHECK(bool(state.nested) == bool(state_.nested),
              "Linear4bit::set_quantized_weight: the new weight ",
              state.nested ? "uses" : "does not use", " double quantization and this layer ",
              state_.nested ? "does" : "does not; build a new Linear4bit instead");
  torch::NoGradGuard no_grad;
  // set_ keeps the registered buffer objects and points them at the new data.
  packed_.set_(packed.contiguous());
  torch::Tensor absmax = state_.absmax;
  absmax.set_(state.absmax.contiguous());
  std::shared_ptr<quant::QuantState> nested = state_.nested;
  if (nested) {
    torch::Tensor nested_absmax = nested->absmax;
    nested_absmax.set_(state.nested->absmax.contiguous());
    *nested = *state.nested;
    nested->absmax = nested_absmax;
  }
  state_ = state;
  state_.absmax = absmax;
  state_.nested = nested;
  // Bind now, so that a backward still pending from an earlier forward sees
  // the new generation and refuses to run against the wrong weight.
  kernel_weight_->sync(packed_, state_);
}

quant::StateDict Linear4bitImpl::bnb_state_dict(const std::string& prefix) const {
  quant::StateDict sd = quant::to_bnb_4bit(packed_, state_, prefix);
  if (bias.defined()) sd[prefix + "bias"] = bias.detach();
  return sd;
}

quant::StorageReport Linear4bitImpl::storage() const {
  return quant::storage_report(packed_, state_);
}

Linear4bit linear4bit_from_bnb(const quant::StateDict& entries, const std::string& prefix,
                               const std::string& what, const Linear4bitOptions& options) {
  auto [packed, state] = quant::from_bnb_4bit(entries, prefix, what);
  auto bias = entries.find(prefix + "bias");
  return Linear4bit(packed, state, bias == entries.end() ? torch::Tensor() : bias->second, options);
}

void Linear4bitImpl::pretty_print(std::ostream& stream) const {
  stream << "lowbit::lora::Linear4bit(in_features=" << in_features()
         << ", out_features=" << out_features() << ", bias=" << (bias.defined() ? "true" : "false")
         << ", format=" << quant::format_info(state_.format).name
         << ", blocksize=" << state_.blocksize
         << ", double_quant=" << (state_.nested ? "true" : "false")
         << ", compute_dtype=" << options_.compute_dtype() << ")";
}

}  // namespace lowbit::lora
