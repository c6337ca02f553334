// Quantization error metrics (as bitsandbytes' tests measure them, plus the
// relative norm, SNR and cosine similarity that int8 toolkits report) and the
// storage cost of a quantized tensor in bytes and bits per parameter, for
// every format: NF4 / FP4, 8-bit blockwise and int8.
#pragma once

#include <string>

#include <torch/types.h>

#include "quant/int8.h"
#include "quant/quant_state.h"

namespace lowbit::quant {

// mean |a - b|, accumulated in double.
double mean_abs_error(const torch::Tensor& reference, const torch::Tensor& approx);
// mean |a - b| / (|a| + 1e-8): bitsandbytes' "relerr".
double mean_relative_error(const torch::Tensor& reference, const torch::Tensor& approx);
// 10 log10(sum a^2 / sum (a - b)^2); +inf when equal.
double snr_db(const torch::Tensor& reference, const torch::Tensor& approx);

// All in double, of e = original - dequantized.
struct ErrorReport {
  double mean_abs = 0;          // mean |e|
  double max_abs = 0;           // max |e|
  double mean_relative = 0;     // mean |e| / (|w| + 1e-8), as mean_relative_error
  double relative_percent = 0;  // 100 ||e|| / ||w|| (0 when both are zero)
  double snr_db = 0;            // as snr_db
  double cosine = 0;            // <w, dequantized> / (||w|| ||dequantized||); 1 when both are zero
  std::string to_string() const;
};
ErrorReport quantization_error(const torch::Tensor& original, const torch::Tensor& dequantized);
// The same for a tensor quantized by quantize_4bit (NF4 / FP4) or
// quantize_blockwise (8-bit), dequantized here, and for int8.
ErrorReport quantization_error(const torch::Tensor& original, const torch::Tensor& codes,
                               const QuantState& state);
ErrorReport quantization_error(const torch::Tensor& original, const Int8Quantized& q);

// Bytes a quantized tensor occupies. Codebooks are per-format constants that
// bitsandbytes nevertheless stores per tensor: counted apart, so the payload
// figure is the asymptotic cost and the total what a file really holds.
struct StorageReport {
  int64_t params = 0;
  int64_t code_bytes = 0;      // packed 4-bit or 8-bit codes
  int64_t absmax_bytes = 0;    // absmax (uint8 codes under double quant) + nested absmax + offset;
                               // int8: scales (SCB) and offsets
  int64_t codebook_bytes = 0;  // quant_map (+ nested_quant_map)
  int64_t payload_bytes() const { return code_bytes + absmax_bytes; }
  int64_t total_bytes() const { return payload_bytes() + codebook_bytes; }
  double payload_bits_per_param() const;
  double total_bits_per_param() const;
  std::string to_string() const;
};
StorageReport storage_report(const torch::Tensor& codes, const QuantState& state);
// Int8: the codes, and the scales and offsets (counted as absmax_bytes).
StorageReport storage_report(const Int8Quantized& q);

}  // namespace lowbit::quant
