#include "nn/rotary.h"

#include <cmath>

namespace lowbit::nn {

torch::Tensor rope_inv_freq(const io::LlamaConfig& config, int64_t seq_len,
                            const torch::Device& device) {
  const io::RopeScaling& s = config.rope_scaling;
  const double dim = double(config.head_dim);
  double base = config.rope_theta;
  if (s.type == io::RopeType::Dynamic && seq_len > config.max_position_embeddings) {
    // NTK-aware base change (transformers' _compute_dynamic_ntk_parameters).
    const double ratio = s.factor * double(seq_len) / double(config.max_position_embeddings);
    base *= std::pow(ratio - (s.factor - 1.0), dim / (dim - 2.0));
  }
  // As transformers: exponents 2i / dim in float32, the power and the
  // reciprocal in float32.
  const torch::Tensor exponent =
      torch::arange(0, config.head_dim, 2, torch::TensorOptions(torch::kInt64).device(device))
          .to(torch::kFloat32) / dim;
  torch::Tensor inv_freq = 1.0 / torch::pow(torch::Scalar(base), exponent);
  if (s.type == io::RopeType::Linear) return inv_freq / s.factor;
  if (s.type != io::RopeType::Llama3) return inv_freq;
  // Llama 3.1's scaling (transformers' _compute_llama3_parameters): wave
  // lengths longer than original / low_freq_factor are divided by `factor`,
  // shorter than original / high_freq_factor kept, and those in between
  // interpolated smoothly.
  const double original = double(s.original_max_position_embeddings);
  const double low_freq_wavelen = original / s.low_freq_factor;
  const double high_freq_wavelen = original / s.high_freq_factor;
  const torch::Tensor wavelen = 2.0 * M_PI / inv_freq;
  const torch::Tensor scaled =
      torch::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
  const torch::Tensor smooth =
      (original / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  const torch::Tensor smoothed = (1.0 - smooth) * scaled / s.factor + smooth * scaled;
  const torch::Tensor medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen);
  return torch::where(medium, smoothed, scaled);
}

RotaryTables rotary_tables(const io::LlamaConfig& config, int64_t first, int64_t length,
                           torch::ScalarType dtype, const torch::Device& device) {
  const torch::Tensor inv_freq = rope_inv_freq(config, first + length, device);
  const torch::Tensor positions =
      torch::arange(first, first + length, torch::TensorOptions(torch::kInt64).device(device))
          .to(torch::kFloat32);
  const torch::Tensor freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
  const torch::Tensor angles = torch::cat({freqs, freqs}, -1);
  return {angles.cos().to(dtype), angles.sin().to(dtype)};
}

torch::Tensor apply_rotary(const torch::Tensor& x, const RotaryTables& tables) {
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor rotated =
      torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * tables.cos + rotated * tables.sin;
}

}  // namespace lowbit::nn
