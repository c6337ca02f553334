#include "lora/matmul_4bit.h"

#include <torch/autograd.h>

#include <array>
#include <tuple>
#include <vector>

#include "quant/quantize.h"
#include "quant/tensor_buffer.h"

namespace lowbit::lora {
namespace {

// Registered so that a weight can ride in an autograd context's saved_data
// (an IValue) and stay alive until backward runs, whatever happens to the layer.
const auto kRegistration =
    torch::class_<Kernel4bitWeight>("lowbit", "Kernel4bitWeight");

// What a binding was made from: storage identity and in-place version of
// every tensor, plus the scalars of the state.
struct Fingerprint {
  std::array<const void*, 4> data{};
  std::array<int64_t, 4> version{};
  torch::Device device = torch::kCPU;
  std::vector<int64_t> shape;
  int64_t blocksize = 0, nested_blocksize = 0;
  float offset = 0.0f;
  quant::Format format = quant::Format::NF4;

  bool operator==(const Fingerprint& o) const {
    return std::tie(data, version, device, shape, blocksize, nested_blocksize, offset, format) ==
           std::tie(o.data, o.version, o.device, o.shape, o.blocksize, o.nested_blocksize,
                    o.offset, o.format);
  }
};

Fingerprint fingerprint(const torch::Tensor& packed, const quant::QuantState& state) {
  Fingerprint f;
  const torch::Tensor tensors[4] = {packed, state.absmax,
                                    state.nested ? state.nested->absmax : torch::Tensor(),
                                    state.nested ? state.nested->code : torch::Tensor()};
  for (size_t i = 0; i < 4; ++i) {
    if (!tensors[i].defined()) continue;
    f.data[i] = tensors[i].data_ptr();
    f.version[i] = tensors[i]._version();
  }
  f.device = packed.device();
  f.shape = state.shape;
  f.blocksize = state.blocksize;
  f.nested_blocksize = state.nested ? state.nested->blocksize : 0;
  f.offset = state.offset;
  f.format = state.format;
  return f;
}

// A handle of its own on t's storage: if the caller later points t at other
// data (set_), the binding keeps the data its buffers were made from.
torch::Tensor own_handle(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.is_contiguous(), "Kernel4bitWeight: ", what,
              " must be contiguous (quantize_4bit and from_bnb_4bit return contiguous tensors)");
  return t.detach();
}

}  // namespace

struct Kernel4bitWeight::Binding {
  Fingerprint fingerprint;
  std::shared_ptr<kernels::Backend> backend;
  std::unique_ptr<quant::TensorBuffer> packed, absmax, nested_absmax, nested_code;
  kernels::Weight4bit desc;
};

Kernel4bitWeight::Kernel4bitWeight(std::shared_ptr<kernels::Backend> backend)
    : backend_(std::move(backend)) {}

Kernel4bitWeight::~Kernel4bitWeight() = default;

std::shared_ptr<const Kernel4bitWeight::Binding> Kernel4bitWeight::binding() const {
  std::lock_guard<std::mutex> lock(mutex_);
  TORCH_CHECK(binding_, "Kernel4bitWeight: used before its weight was bound (sync)");
  return binding_;
}

bool Kernel4bitWeight::stale(const torch::Tensor& packed, const quant::QuantState& state) const {
  return !binding_ || !(binding_->fingerprint == fingerprint(packed, state));
}

void check_weight_4bit(const torch::Tensor& packed, const quant::QuantState& state,
                       const char* what) {
  quant::check_state(packed, state, what);
  TORCH_CHECK(state.is_4bit() && state.shape.size() == 2, what, ": expected a 4-bit state of a ",
              "2-d weight [out_features, in_features], got ",
              quant::format_info(state.format).name, " of shape ", torch::IntArrayRef(state.shape));
}

uint64_t Kernel4bitWeight::sync(const torch::Tensor& packed, const quant::QuantState& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!stale(packed, state)) return generation_.load();
  check_weight_4bit(packed, state, "Linear4bit weight");
  auto b = std::make_shared<Binding>();
  b->backend = backend_ ? backend_ : quant::backend_for(packed, "Linear4bit weight");
  kernels::Backend& be = *b->backend;
  b->fingerprint = fingerprint(packed, state);
  b->packed = std::make_unique<quant::TensorBuffer>(be, own_handle(packed, "packed"), true);
  b->absmax = std::make_unique<quant::TensorBuffer>(be, own_handle(state.absmax, "absmax"), true);
  kernels::Weight4bit& d = b->desc;
  d.packed = &b->packed->buffer();
  d.absmax = &b->absmax->buffer();
  d.out_features = size_t(state.shape[0]);
  d.in_features = size_t(state.shape[1]);
  d.blocksize = int(state.blocksize);
  d.format = quant::to_format4(state.format);
  if (state.nested) {
    b->nested_absmax = std::make_unique<quant::TensorBuffer>(
        be, own_handle(state.nested->absmax, "nested absmax"), true);
    // The nested codebook (256 floats) travels to the codes (it is not a
    // module buffer, so Module::to leaves it where it was).
    b->nested_code = std::make_unique<quant::TensorBuffer>(
        be, own_handle(state.nested->code.to(packed.device()), "nested code"), true);
    d.nested_absmax = &b->nested_absmax->buffer();
    d.nested_code = &b->nested_code->buffer();
    d.nested_blocksize = int(state.nested->blocksize);
    d.offset = state.offset;
  }
  binding_ = std::move(b);
  return ++generation_;
}

int64_t Kernel4bitWeight::in_features() const {
  return int64_t(binding()->desc.in_features);
}

int64_t Kernel4bitWeight::out_features() const {
  return int64_t(binding()->desc.out_features);
}

torch::Device Kernel4bitWeight::device() const { return binding()->fingerprint.device; }

torch::Tensor Kernel4bitWeight::forward(const torch::Tensor& x, const torch::Tensor& bias,
                                        bool int8_gemv) const {
  const auto bound = binding();
  const kernels::Weight4bit& w = bound->desc;
  const kernels::DType dtype = quant::kernel_dtype(x.scalar_type(), "Linear4bit input");
  const int64_t m = x.size(0);
  torch::Tensor y = torch::empty({m, int64_t(w.out_features)}, x.options());
  kernels::Backend& be = *bound->backend;
  quant::TensorBuffer xb(be, x, true), yb(be, y, false);
  std::unique_ptr<quant::TensorBuffer> bb;
  if (bias.defined()) bb = std::make_unique<quant::TensorBuffer>(be, bias, true);
  const kernels::Buffer* bias_buffer = bb ? &bb->buffer() : nullptr;
  if (int8_gemv && m == 1)
    be.gemv_4bit_int8(xb.buffer(), w, bias_buffer, yb.buffer(), dtype);
  else
    be.gemm_4bit(xb.buffer(), size_t(m), w, bias_buffer, yb.buffer(), dtype);
  yb.download();
  return y;
}

torch::Tensor Kernel4bitWeight::input_grad(const torch::Tensor& dy) const {
  const auto bound = binding();
  const kernels::Weight4bit& w = bound->desc;
  const kernels::DType dtype = quant::kernel_dtype(dy.scalar_type(), "Linear4bit output gradient");
  const int64_t m = dy.size(0);
  torch::Tensor dx = torch::empty({m, int64_t(w.in_features)}, dy.options());
  kernels::Backend& be = *bound->backend;
  quant::TensorBuffer db(be, dy, true), xb(be, dx, false);
  be.gemm_4bit_input_grad(db.buffer(), size_t(m), w, xb.buffer(), dtype);
  xb.download();
  return dx;
}

namespace {

// The weight is an argument the autograd engine ignores (not a tensor) and
// rides in saved_data, keeping it alive until backward.
struct Matmul4bitFunction : torch::autograd::Function<Matmul4bitFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& bias,
                               const c10::intrusive_ptr<Kernel4bitWeight>& weight) {
    ctx->saved_data["weight"] = weight;
    ctx->saved_data["generation"] = int64_t(weight->generation());
    return weight->forward(x, bias.numel() ? bias : torch::Tensor());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto weight = ctx->saved_data["weight"].toCustomClass<Kernel4bitWeight>();
    TORCH_CHECK(int64_t(weight->generation()) == ctx->saved_data["generation"].toInt(),
                "Linear4bit: the quantized weight was replaced between forward and backward "
                "(e.g. by merge()); run backward before changing it");
    const torch::Tensor dy = grads[0].contiguous();
    torch::Tensor dx, dbias;
    if (ctx->needs_input_grad(0)) dx = weight->input_grad(dy);
    if (ctx->needs_input_grad(1)) dbias = dy.sum(0);
    return {dx, dbias, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor matmul_4bit(const torch::Tensor& x, const c10::intrusive_ptr<Kernel4bitWeight>& weight,
                          const torch::Tensor& bias, bool int8_gemv) {
  TORCH_CHECK(weight && weight->generation() > 0, "matmul_4bit: the weight is not bound (sync it)");
  TORCH_CHECK(x.defined() && x.dim() >= 1, "matmul_4bit: x must have at least one dimension");
  const auto t = x.scalar_type();
  TORCH_CHECK(t == torch::kFloat32 || t == torch::kFloat16 || t == torch::kBFloat16,
              "matmul_4bit: x has dtype ", t,
              "; the compute dtype must be float32, float16 or bfloat16");
  TORCH_CHECK(x.device() == weight->device(), "matmul_4bit: x is on ", x.device(),
              " but the 4-bit weight is on ", weight->device(),
              "; move the input (or the layer, with Module::to) to one device");
  TORCH_CHECK(x.size(-1) == weight->in_features(), "matmul_4bit: x has shape ", x.sizes(),
              "; expected [..., ", weight->in_features(), "] for a weight [",
              weight->out_features(), ", ", weight->in_features(), "]");
  TORCH_CHECK(!bias.defined() || (bias.scalar_type() == t && bias.device() == x.device()),
              "matmul_4bit: bias has dtype ", bias.defined() ? bias.scalar_type() : t, " on ",
              bias.defined() ? bias.device() : x.device(), "; expected x's dtype ", t, " on ",
              x.device());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight->out_features()),
              "matmul_4bit: bias has shape ", bias.defined() ? bias.sizes() : torch::IntArrayRef{},
              "; expected [", weight->out_features(), "]");
  const torch::Tensor x2 = x.reshape({-1, x.size(-1)}).contiguous();
  torch::Tensor y;
  if (torch::autograd::GradMode::is_enabled() &&
      (x2.requires_grad() || (bias.defined() && bias.requires_grad()))) {
    // libtorch 1.13's Function::apply records every tensor input's device, which
    // an undefined tensor lacks: "no bias" travels as an empty tensor instead.
    const torch::Tensor b = bias.defined() ? bias.contiguous() : torch::empty({0}, x.options());
    y = Matmul4bitFunction::apply(x2, b, weight);
  } else {
    // Nothing to differentiate (inference, or a frozen first layer): no graph node, no saved
    // context. On a GPU at batch 1 the host's few microseconds are part of every call.
    y = weight->forward(x2, bias.defined() ? bias.contiguous() : torch::Tensor(),
                        int8_gemv && !torch::autograd::GradMode::is_enabled());
  }
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = y.size(1);
  return y.view(sizes);
}

torch::Tensor matmul_4bit(const torch::Tensor& x, const torch::Tensor& packed,
                          const quant::QuantState& state, const torch::Tensor& bias) {
  auto weight = c10::make_intrusive<Kernel4bitWeight>(nullptr);
  weight->sync(packed.contiguous(), state);
  return matmul_4bit(x, weight, bias);
}

}  // namespace lowbit::lora
