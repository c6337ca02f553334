// Text generation with a LlamaForCausalLM and its KV cache: greedy decoding,
// or sampling with temperature, top-k and top-p (nucleus, Holtzman et al.
// 2019) applied in that order, as transformers' logits warpers are, from a
// generator seeded by the caller so runs repeat exactly.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "nn/llama.h"

namespace lowbit::nn {

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  // false: the most likely token (the first on ties); true: a draw from the
  // distribution below.
  bool do_sample = false;
  // Logits are divided by it (> 0).
  double temperature = 1.0;
  // Keep the k most likely tokens (and any tied with the k-th); 0: all.
  int64_t top_k = 0;
  // Keep the most likely tokens until their probability reaches top_p
  // (at least one), in (0, 1]; 1: all.
  double top_p = 1.0;
  uint64_t seed = 0;
  // Generation stops after producing one of these; unset: the config's
  // eos_token_id(s).
  std::optional<std::vector<int64_t>> eos_token_ids;
};

// The distribution sampling draws from: float32 [vocab] probabilities of
// logits [vocab] after temperature, top-k and top-p; zero outside the kept
// tokens.
torch::Tensor sampling_probs(const torch::Tensor& logits, const GenerationOptions& options);

// The next token for logits [vocab]: argmax, or one draw from
// sampling_probs with `generator` (a CPU generator).
int64_t next_token(const torch::Tensor& logits, const GenerationOptions& options,
                   at::Generator& generator);

// Continues `prompt` (non-empty token ids), running the prompt once and then
// one token per step through the KV cache, without gradients. Returns the new
// tokens only, ending with the eos token when one was produced. Put the model
// in eval() mode first if it has dropout (LoRA adapters).
std::vector<int64_t> generate(LlamaForCausalLMImpl& model, const std::vector<int64_t>& prompt,
                              const GenerationOptions& options = {});

}  // namespace lowbit::nn
