// Quantization error metrics (as bitsandbytes' tests measure them) and the
// storage cost of a quantized tensor in bytes and bits per parameter.
#pragma once

#include <string>

#include <torch/types.h>

#include "quant/quant_state.h"

namespace lowbit::quant {

// mean |a - b|, accumulated in double.
double mean_abs_error(const torch::Tensor& reference, const torch::Tensor& approx);
// mean |a - b| / (|a| + 1e-8): bitsandbytes' "relerr".
double mean_relative_error(const torch::Tensor& reference, const torch::Tensor& approx);
// 10 log10(sum a^2 / sum (a - b)^2); +inf when equal.
double snr_db(const torch::Tensor& reference, const torch::Tensor& approx);

struct ErrorReport {
  double mean_abs = 0, mean_relative = 0, max_abs = 0, snr_db = 0;
  std::string to_string() const;
};
ErrorReport error_report(const torch::Tensor& reference, const torch::Tensor& approx);

// Bytes a quantized tensor occupies. Codebooks are per-format constants that
// bitsandbytes nevertheless stores per tensor: counted apart, so the payload
// figure is the asymptotic cost and the total what a file really holds.
struct StorageReport {
  int64_t params = 0;
  int64_t code_bytes = 0;      // packed 4-bit or 8-bit codes
  int64_t absmax_bytes = 0;    // absmax (uint8 codes under double quant) + nested absmax + offset
  int64_t codebook_bytes = 0;  // quant_map (+ nested_quant_map)
  int64_t payload_bytes() const { return code_bytes + absmax_bytes; }
  int64_t total_bytes() const { return payload_bytes() + codebook_bytes; }
  double payload_bits_per_param() const;
  double total_bits_per_param() const;
  std::string to_string() const;
};
StorageReport storage_report(const torch::Tensor& codes, const QuantState& state);

}  // namespace lowbit::quant
