#include "quant/int8.h"

namespace lowbit::quant {
namespace {

// The weight as float32 [rows * groups, group] (a view where possible).
torch::Tensor as_groups(const torch::Tensor& w, int64_t group_size, const char* op) {
  TORCH_CHECK(w.defined() && w.numel() > 0, op, ": the weight is undefined or empty");
  TORCH_CHECK(w.is_floating_point(), op, ": the weight has dtype ", w.scalar_type(),
              "; expected a floating-point tensor");
  TORCH_CHECK(group_size >= 0, op, ": group_size must be 0 (per channel) or positive, got ",
              group_size);
  const torch::Tensor f = w.detach().to(torch::kFloat32);
  TORCH_CHECK(torch::isfinite(f).all().item<bool>(), op,
              ": the weight contains inf or nan; int8 quantization needs finite values");
  const int64_t rows = w.dim() <= 1 ? 1 : w.size(0);
  const int64_t row = w.numel() / rows;
  if (group_size == 0) return f.reshape({rows, row});
  TORCH_CHECK(row % group_size == 0, op, ": group_size ", group_size,
              " does not divide the row length ", row, " of a weight of shape ", w.sizes());
  return f.reshape({rows * (row / group_size), group_size});
}

// Symmetric codes of each row of g: round(g * (127 / absmax)), 0 for a zero row.
std::pair<torch::Tensor, torch::Tensor> symmetric_codes(const torch::Tensor& g) {
  const torch::Tensor absmax = g.abs().amax(1, /*keepdim=*/true);
  // A float division, as the kernels quantize activations (Scalar / Tensor
  // would multiply by a rounded reciprocal instead).
  const torch::Tensor inv = torch::where(absmax > 0, torch::full_like(absmax, 127.0f) / absmax,
                                         torch::zeros_like(absmax));
  return {torch::round(g * inv).to(torch::kInt8), absmax};
}

}  // namespace

Int8Quantized quantize_int8(const torch::Tensor& w, const Int8Options& options) {
  const torch::Tensor g = as_groups(w, options.group_size, "quantize_int8");
  const int64_t rows = w.dim() <= 1 ? 1 : w.size(0);
  Int8Quantized q;
  q.options = options;
  q.dtype = w.scalar_type();
  if (options.symmetric) {
    auto [codes, absmax] = symmetric_codes(g);
    q.codes = codes.reshape(w.sizes());
    q.scale = (absmax / 127.0f).reshape({rows, -1});
    return q;
  }
  // The range always holds 0, so the offset (the code of 0.0) lies in
  // [-128, 127]. min + 255 steps = max, so every value rounds into range; the
  // clamp only absorbs float rounding at the ends.
  const torch::Tensor lo = g.amin(1, true).clamp_max(0.0);
  const torch::Tensor hi = g.amax(1, true).clamp_min(0.0);
  torch::Tensor scale = (hi - lo) / 255.0f;
  scale = torch::where(scale > 0, scale, torch::ones_like(scale));  // an all-zero group
  const torch::Tensor offset = torch::round(-128.0f - lo / scale).clamp(-128, 127);
  q.codes = (torch::round(g / scale) + offset).clamp(-128, 127).to(torch::kInt8).reshape(w.sizes());
  q.scale = scale.reshape({rows, -1});
  q.offset = offset.to(torch::kInt8).reshape({rows, -1});
  return q;
}

torch::Tensor dequantize_int8(const Int8Quantized& q) {
  TORCH_CHECK(q.codes.defined() && q.codes.scalar_type() == torch::kInt8 && q.scale.defined(),
              "dequantize_int8: expected int8 codes and a scale");
  TORCH_CHECK(q.options.symmetric != q.offset.defined(), "dequantize_int8: ",
              q.options.symmetric ? "a symmetric form has no offset"
                                  : "the asymmetric form needs its offset");
  const int64_t groups = q.scale.numel();
  TORCH_CHECK(groups > 0 && q.codes.numel() % groups == 0, "dequantize_int8: ", groups,
              " scales do not divide ", q.codes.numel(), " codes");
  torch::Tensor c = q.codes.to(torch::kFloat32).reshape({groups, -1});
  if (q.offset.defined()) c = c - q.offset.to(torch::kFloat32).reshape({groups, 1});
  return (c * q.scale.reshape({groups, 1})).reshape(q.codes.sizes()).to(q.dtype);
}

std::pair<torch::Tensor, torch::Tensor> quantize_int8_rowwise(const torch::Tensor& w) {
  TORCH_CHECK(w.defined() && w.dim() == 2,
              "quantize_int8_rowwise: expected a weight [out, in], got ",
              w.defined() ? w.sizes() : torch::IntArrayRef{});
  auto [codes, absmax] = symmetric_codes(as_groups(w, 0, "quantize_int8_rowwise"));
  return {codes.contiguous(), absmax.reshape({-1}).contiguous()};
}

torch::Tensor dequantize_int8_rowwise(const torch::Tensor& codes, const torch::Tensor& scb) {
  return codes.to(torch::kFloat32) * (scb.to(torch::kFloat32) / 127.0f).reshape({-1, 1});
}

}  // namespace lowbit::quant
