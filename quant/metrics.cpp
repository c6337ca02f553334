#include "quant/metrics.h"

#include <cmath>
#include <limits>
#include <sstream>

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

ErrorReport error_report(const torch::Tensor& reference, const torch::Tensor& approx) {
  auto [a, b] = as_double(reference, approx, "error_report");
  ErrorReport r;
  r.mean_abs = mean_abs_error(a, b);
  r.mean_relative = mean_relative_error(a, b);
  r.max_abs = a.numel() ? (a - b).abs().max().item<double>() : 0.0;
  r.snr_db = snr_db(a, b);
  return r;
}

std::string ErrorReport::to_string() const {
  std::ostringstream os;
  os << "mean abs error " << mean_abs << ", mean relative error " << mean_relative
     << ", max abs error " << max_abs << ", SNR " << snr_db << " dB";
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
