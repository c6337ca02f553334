// Hugging Face Llama-family checkpoints (config.json + safetensors, single or
// sharded) into a LlamaForCausalLM, reading one tensor at a time from the
// mapped files; selected linears can be quantized to lora::Linear4bit (or
// lora::Linear8bit) as they are read, so the full-precision model never exists in memory. And the way
// back: a model written in the same layout.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "nn/llama.h"

namespace lowbit::nn {

struct HfLoadOptions {
  // The dtype of every weight kept in full precision (embeddings, norms,
  // lm_head, linears not quantized) and so of the activations: float32 or
  // bfloat16 (float16 loads too, but libtorch 1.13 computes it on CUDA only).
  // Weights stored in another dtype are converted.
  torch::ScalarType dtype = torch::kFloat32;
  // Quantize the linears whose module paths match `quantize_modules`
  // (lora::PathPatterns: names such as "q_proj" match a path's last parts)
  // into Linear4bit while reading, with `linear4bit`'s format, block sizes
  // and compute dtype. The codes come from the stored values, whose dtype
  // dequantized_weight() then returns (bitsandbytes keeps the original dtype
  // the same way); their biases are kept in `dtype`.
  bool quantize = false;
  std::vector<std::string> quantize_modules = {"q_proj", "k_proj",    "v_proj", "o_proj",
                                               "gate_proj", "up_proj", "down_proj"};
  // Paths kept in full precision although quantize_modules selects them
  // (lora::PathPatterns, as transformers' modules_to_not_convert /
  // llm_int8_skip_modules): e.g. {"down_proj"} or {"layers.0.self_attn.q_proj"}.
  std::vector<std::string> modules_to_not_convert;
  lora::Linear4bitOptions linear4bit;
  // When set, the quantized projections become lora::Linear8bit layers
  // (LLM.int8(): row-wise int8 codes and SCB, bitsandbytes' Linear8bitLt) with
  // these options instead of Linear4bit ones.
  std::optional<lora::Linear8bitOptions> int8;
  // Refuse a weight stored in a dtype other than config.json's torch_dtype.
  bool check_dtype = true;
};

struct HfLoadReport {
  io::LlamaConfig config;
  int64_t tensors_read = 0;
  uint64_t bytes_read = 0;  // as stored on disk
  int64_t quantized_layers = 0;
  double seconds = 0;
};

// Reads <dir>/config.json and the weights (io::HfCheckpoint). Every tensor
// the model needs must be present with the shape config.json implies and a
// floating dtype (F32, BF16, F16); tensors the model does not use are refused,
// except an lm_head.weight next to tied embeddings and the rotary_emb.inv_freq
// buffers older transformers saved. Errors name the file, the tensor, and
// what was expected against what was found.
LlamaForCausalLM load_hf_causal_lm(const std::string& dir, const HfLoadOptions& options = {},
                                   HfLoadReport* report = nullptr);

struct HfSaveOptions {
  // The stored dtype; unset: the model's dtype.
  std::optional<torch::ScalarType> dtype;
  // Shard size limit (0: one model.safetensors); see io::save_hf_checkpoint.
  uint64_t max_shard_bytes = 0;
};

// Writes `model` as a Hugging Face checkpoint: config.json (torch_dtype set
// to the stored dtype) and its weights under HF's names, one tensor computed
// at a time: Linear4bit layers dequantized, LoraLinear layers with their
// adapters folded in (the merged model).
void save_hf_causal_lm(LlamaForCausalLMImpl& model, const std::string& dir,
                       const HfSaveOptions& options = {});

}  // namespace lowbit::nn
