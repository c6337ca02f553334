#include "quant/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "quant/quantize.h"

namespace lowbit::quant {
namespace {

std::pair<torch::Tensor, torch::Tensor> as_double(const torch::Tensor& a, const torch::Tensor& b,
                                                  const char* op) {
  TORCH_CHECK(a.defined() && b.defined() && a.sizes() == b.sizes(), op,
              ": tensors must have the same shape, got ",
              a.defined() ? a.sizes() : torch::IntArrayRef{}, " and ",
              b.defined() ? b.sizes() : torch::IntArrayRef{});
  return {a.detach().to(torch::kFloat64), b.detach().to(torch::kFloat64)};
}

int64_t bytes_of(const torch::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

}  // namespace

double mean_abs_error(const torch::Tensor& reference, const torch::Tensor& approx) {
  auto [a, b] = as_double(reference, approx, "mean_abs_error");
  return (a - b).abs().mean().item<double>();
}

double mean_relative_error(const torch::Tensor& reference, const torch::Tensor& approx) {
  auto [a, b] = as_double(reference, approx, "mean_relative_error");
  return ((a - b).abs() / (a.abs() + 1e-8)).mean().item<double>();
}

double snr_db(const torch::Tensor& reference, const torch::Tensor& approx) {
  auto [a, b] = as_double(reference, approx, "snr_db");
  const double signal = a.square().sum().item<double>();
  const double noise = (a - b).square().sum().item<double>();
  if (noise == 0.0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);
}

// The sums run over slices of kSlice elements converted to double one at a
// time, so a report on a large weight needs a few MiB beside it, not several
// float64 copies of it (quantize_model reports every layer it converts).
ErrorReport quantization_error(const torch::Tensor& original, const torch::Tensor& dequantized) {
  TORCH_CHECK(original.defined() && dequantized.defined() &&
                  original.sizes() == dequantized.sizes(),
              "quantization_error: tensors must have the same shape, got ",
              original.defined() ? original.sizes() : torch::IntArrayRef{}, " and ",
              dequantized.defined() ? dequantized.sizes() : torch::IntArrayRef{});
  constexpr int64_t kSlice = int64_t(1) << 18;
  const torch::Tensor fa = original.detach().reshape(-1), fb = dequantized.detach().reshape(-1);
  const int64_t n = fa.numel();
  double abs_sum = 0, rel_sum = 0, max_abs = 0, a_sq = 0, b_sq = 0, e_sq = 0, ab = 0;
  for (int64_t first = 0; first < n; first += kSlice) {
    const int64_t len = std::min(kSlice, n - first);
    const torch::Tensor a = fa.narrow(0, first, len).to(torch::kFloat64);
    const torch::Tensor b = fb.narrow(0, first, len).to(torch::kFloat64);
    const torch::Tensor e = (a - b).abs_();
    abs_sum += e.sum().item<double>();
    rel_sum += (e / (a.abs() + 1e-8)).sum().item<double>();
    max_abs = std::max(max_abs, e.max().item<double>());
    a_sq += a.square().sum().item<double>();
    b_sq += b.square().sum().item<double>();
    e_sq += e.square().sum().item<double>();
    ab += (a * b).sum().item<double>();
  }
  ErrorReport r;  // an empty tensor: NaN means, like torch's mean of nothing
  r.mean_abs = abs_sum / double(n);
  r.mean_relative = rel_sum / double(n);
  r.max_abs = max_abs;
  r.snr_db = e_sq == 0.0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(a_sq / e_sq);
  const double norm_a = std::sqrt(a_sq), norm_b = std::sqrt(b_sq), norm_e = std::sqrt(e_sq);
  r.relative_percent = norm_e == 0.0 ? 0.0 : 100.0 * norm_e / norm_a;  // inf when w = 0 only
  r.cosine = norm_a == 0.0 || norm_b == 0.0 ? (norm_a == norm_b ? 1.0 : 0.0)
                                            : ab / (norm_a * norm_b);
  return r;
}

ErrorReport quantization_error(const torch::Tensor& original, const torch::Tensor& codes,
                               const QuantState& state) {
  return quantization_error(original, state.is_4bit() ? dequantize_4bit(codes, state)
                                                      : dequantize_blockwise(codes, state));
}

ErrorReport quantization_error(const torch::Tensor& original, const Int8Quantized& q) {
  return quantization_error(original, dequantize_int8(q));
}

std::string ErrorReport::to_string() const {
  std::ostringstream os;
  os << "mean abs error " << mean_abs << ", max abs error " << max_abs
     << ", mean relative error " << mean_relative << ", relative error " << relative_percent
     << "%, SNR " << snr_db << " dB, cosine " << cosine;
  return os.str();
}

StorageReport storage_report(const torch::Tensor& codes, const QuantState& state) {
  StorageReport r;
  r.params = state.numel();
  r.code_bytes = bytes_of(codes);
  r.absmax_bytes = bytes_of(state.absmax);
  r.codebook_bytes = bytes_of(state.code);
  if (state.nested) {
    r.absmax_bytes += bytes_of(state.nested->absmax) + int64_t(sizeof(float));  // + offset
    r.codebook_bytes += bytes_of(state.nested->code);
  }
  return r;
}

StorageReport storage_report(const Int8Quantized& q) {
  StorageReport r;
  r.params = q.codes.numel();
  r.code_bytes = bytes_of(q.codes);
  r.absmax_bytes = bytes_of(q.scale) + bytes_of(q.offset);
  return r;
}

double StorageReport::payload_bits_per_param() const {
  return params ? 8.0 * double(payload_bytes()) / double(params) : 0.0;
}

double StorageReport::total_bits_per_param() const {
  return params ? 8.0 * double(total_bytes()) / double(params) : 0.0;
}

std::string StorageReport::to_string() const {
  std::ostringstream os;
  os << params << " params: codes " << code_bytes << " B, absmax " << absmax_bytes
     << " B, codebooks " << codebook_bytes << " B; " << payload_bits_per_param()
     << " bits/param (" << total_bits_per_param() << " with codebooks)";
  return os.str();
}

}  // namespace lowbit::quant
