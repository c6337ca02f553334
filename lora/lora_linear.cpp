#include "lora/lora_linear.h"

#include <cmath>

#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>
#include <torch/version.h>

#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "quant/int8.h"
#include "quant/quantize.h"

namespace lowbit::lora {
namespace {

// A copy that shares no tensor with `s` (set_quantized_weight updates the
// layer's tensors in place, which must not reach the copy kept for unmerge).
quant::QuantState deep_copy(const quant::QuantState& s) {
  quant::QuantState out = s;
  out.absmax = s.absmax.clone();
  out.code = s.code.clone();
  if (s.nested) out.nested = std::make_shared<quant::QuantState>(deep_copy(*s.nested));
  return out;
}

}  // namespace

LoraLinearImpl::LoraLinearImpl(std::shared_ptr<torch::nn::Module> base, const LoraOptions& options)
    : options_(options), base_(std::move(base)) {
  TORCH_CHECK(base_, "LoraLinear: the base layer is null");
  int64_t in = 0, out = 0;
  torch::Device device = torch::kCPU;  // the adapters live with the base
  if (auto* q = dynamic_cast<Linear4bitImpl*>(base_.get())) {
    in = q->in_features();
    out = q->out_features();
    device = q->packed_weight().device();
  } else if (auto* q8 = dynamic_cast<Linear8bitImpl*>(base_.get())) {
    in = q8->in_features();
    out = q8->out_features();
    device = q8->int8_weight().device();
  } else if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(base_.get())) {
    in = l->options.in_features();
    out = l->options.out_features();
    device = l->weight.device();
  } else {
    TORCH_CHECK(false, "LoraLinear: the base layer is a ", base_->name(), "; expected ",
                "lowbit::lora::Linear4bit, lowbit::lora::Linear8bit or torch::nn::Linear");
  }
  const int64_t r = options_.r();
  TORCH_CHECK(r >= 1, "LoraLinear: rank r must be at least 1, got ", r);
  TORCH_CHECK(options_.alpha() > 0.0 && std::isfinite(options_.alpha()),
              "LoraLinear: alpha must be a positive number, got ", options_.alpha());
  TORCH_CHECK(options_.dropout() >= 0.0 && options_.dropout() < 1.0,
              "LoraLinear: dropout must be in [0, 1), got ", options_.dropout());
  const auto dtype = options_.dtype();
  TORCH_CHECK(dtype == torch::kFloat16 || dtype == torch::kBFloat16 || dtype == torch::kFloat32,
              "LoraLinear: adapter dtype ", dtype, " is not supported; expected float16, ",
              "bfloat16 or float32");
  const auto cd = options_.compute_dtype();
  TORCH_CHECK(cd == torch::kFloat32 || cd == torch::kFloat16 || cd == torch::kBFloat16,
              "LoraLinear: compute_dtype ", cd,
              " is not supported; expected float32, float16 or bfloat16");
  register_module("base_layer", base_);
  torch::Tensor a = torch::empty({r, in}, torch::kFloat32);
  torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  lora_A = register_parameter("lora_A", a.to(device, dtype));
  lora_B = register_parameter("lora_B",
                              torch::zeros({out, r}, torch::TensorOptions(dtype).device(device)));
}

double LoraLinearImpl::scaling() const {
  const double r = double(options_.r());
  return options_.use_rslora() ? options_.alpha() / std::sqrt(r) : options_.alpha() / r;
}

torch::Tensor LoraLinearImpl::base_forward(const torch::Tensor& x) {
  if (auto* q = dynamic_cast<Linear4bitImpl*>(base_.get())) return q->forward(x);
  if (auto* q8 = dynamic_cast<Linear8bitImpl*>(base_.get())) return q8->forward(x);
  return dynamic_cast<torch::nn::LinearImpl*>(base_.get())->forward(x);
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
  const torch::Tensor y = base_forward(x);
  if (merged_) return y;
  const auto cd = options_.compute_dtype();
#if TORCH_VERSION_MAJOR < 2
  TORCH_CHECK(cd != torch::kFloat16 || !x.device().is_cpu(),
              "LoraLinear: compute_dtype float16 needs a CUDA device with this libtorch (",
              TORCH_VERSION, " has no float16 matmul on the CPU); use bfloat16 or float32 there");
#endif
  torch::Tensor h = options_.dropout() > 0.0 ? torch::dropout(x, options_.dropout(), is_training()) : x;
  h = torch::matmul(h.to(cd), lora_A.to(cd).t());
  h = torch::matmul(h, lora_B.to(cd).t());
  return y + (h * scaling()).to(y.scalar_type());
}

torch::Tensor LoraLinearImpl::delta_weight() const {
  torch::NoGradGuard no_grad;
  return torch::matmul(lora_B.to(torch::kFloat32), lora_A.to(torch::kFloat32)) * scaling();
}

void LoraLinearImpl::merge() {
  TORCH_CHECK(!merged_, "LoraLinear::merge: the adapter is already merged; unmerge() first");
  torch::NoGradGuard no_grad;
  const torch::Tensor delta = delta_weight();
  if (auto* q = dynamic_cast<Linear4bitImpl*>(base_.get())) {
    const quant::QuantState& s = q->quant_state();
    unmerged_codes_ = q->packed_weight().clone();
    unmerged_state_ = deep_copy(s);
    quant::Quantize4bitOptions o;
    o.format = s.format;
    o.blocksize = s.blocksize;
    o.double_quant = bool(s.nested);
    if (s.nested) o.nested_blocksize = s.nested->blocksize;
    const torch::Tensor w = (q->dequantized_weight().to(torch::kFloat32) + delta).to(s.dtype);
    auto requantized = q->options().backend() ? quant::quantize_4bit(w, o, *q->options().backend())
                                              : quant::quantize_4bit(w, o);
    q->set_quantized_weight(requantized.first, requantized.second);
  } else if (auto* q8 = dynamic_cast<Linear8bitImpl*>(base_.get())) {
    unmerged_codes_ = q8->int8_weight().clone();
    unmerged_scb_ = q8->scb().clone();
    auto requantized = quant::quantize_int8_rowwise(q8->dequantized_weight() + delta);
    q8->set_quantized_weight(requantized.first, requantized.second);
  } else {
    auto* l = dynamic_cast<torch::nn::LinearImpl*>(base_.get());
    l->weight.add_(delta.to(l->weight.scalar_type()));
  }
  merged_ = true;
}

void LoraLinearImpl::unmerge() {
  TORCH_CHECK(merged_, "LoraLinear::unmerge: the adapter is not merged");
  torch::NoGradGuard no_grad;
  if (auto* q = dynamic_cast<Linear4bitImpl*>(base_.get())) {
    q->set_quantized_weight(unmerged_codes_, unmerged_state_);
    unmerged_state_ = quant::QuantState();
  } else if (auto* q8 = dynamic_cast<Linear8bitImpl*>(base_.get())) {
    q8->set_quantized_weight(unmerged_codes_, unmerged_scb_);
    unmerged_scb_ = torch::Tensor();
  } else {
    auto* l = dynamic_cast<torch::nn::LinearImpl*>(base_.get());
    l->weight.sub_(delta_weight().to(l->weight.scalar_type()));
  }
  unmerged_codes_ = torch::Tensor();
  merged_ = false;
}

void LoraLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "lowbit::lora::LoraLinear(in_features=" << in_features()
         << ", out_features=" << out_features() << ", r=" << options_.r()
         << ", alpha=" << options_.alpha() << ", scaling=" << scaling()
         << ", dropout=" << options_.dropout()
         << ", rslora=" << (options_.use_rslora() ? "true" : "false")
         << ", dtype=" << options_.dtype() << ", merged=" << (merged_ ? "true" : "false") << ")";
}

}  // namespace lowbit::lora
