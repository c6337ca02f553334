// Rotary position embeddings (Su et al. 2021, RoFormer) in Hugging Face's
// convention: a head's dimensions are split in halves that rotate together
// (rotate_half), not interleaved pairs. Frequencies follow transformers'
// modeling_rope_utils.py: default, linear, dynamic NTK and llama3 scaling.
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "io/hf_config.h"

namespace lowbit::nn {

// float32 [head_dim / 2] inverse frequencies for a forward pass whose last
// position is seq_len - 1. Only dynamic scaling depends on seq_len: it
// raises the base once seq_len exceeds max_position_embeddings. (transformers
// keeps the largest length seen so far and recomputes only when it grows;
// for a forward from position 0 or generation that only grows, both agree.)
torch::Tensor rope_inv_freq(const io::LlamaConfig& config, int64_t seq_len,
                            const torch::Device& device = torch::kCPU);

// cos and sin [T, head_dim] of positions first .. first + T - 1, computed in
// float32 and cast to `dtype` (as transformers does).
struct RotaryTables {
  torch::Tensor cos;
  torch::Tensor sin;
};
RotaryTables rotary_tables(const io::LlamaConfig& config, int64_t first, int64_t length,
                           torch::ScalarType dtype, const torch::Device& device);

// x [B, heads, T, head_dim] rotated: x cos + rotate_half(x) sin.
torch::Tensor apply_rotary(const torch::Tensor& x, const RotaryTables& tables);

}  // namespace lowbit::nn
