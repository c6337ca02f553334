#include "quant/metrics.h"

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

ErrorReport quantization_error(const torch::Tensor& original, const torch::Tensor& dequantized) {
  auto [a, b] = as_double(original, dequantized, "quantization_error");
  ErrorReport r;
  r.mean_abs = mean_abs_error(a, b);
  r.mean_relative = mean_relative_error(a, b);
  r.max_abs = a.numel() ? (a - b).abs().max().item<double>() : 0.0;
  r.snr_db = snr_db(a, b);
  const double norm_a = a.norm().item<double>(), norm_b = b.norm().item<double>();
  const double norm_e = (a - b).norm().item<double>();
  r.relative_percent = norm_e == 0.0 ? 0.0 : 100.0 * norm_e / norm_a;  // inf when w = 0 only
  r.cosine = norm_a == 0.0 || norm_b == 0.0 ? (norm_a == norm_b ? 1.0 : 0.0)
                                            : (a * b).sum().item<double>() / (norm_a * norm_b);
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
