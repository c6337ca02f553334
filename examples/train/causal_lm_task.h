// Subword language modelling with Llama-family decoders: a Hugging Face
// checkpoint (model.name hf_causal_lm: config.json, safetensors and its
// tokenizer, quantized to 4 bits while it is read when the recipe has a quant
// section) or a fresh Llama-shaped model (model.name llama) with a
// SentencePiece tokenizer trained on the run's training text. Data: KJV,
// fortunes, JSONL or plain text, packed into model.block_size windows with
// the loss on the learned tokens only; evaluation gives loss and perplexity.
#pragma once

#include <memory>

#include <torch/types.h>

#include "examples/config/recipe.h"
#include "examples/train/task.h"

namespace lowbit::train {

std::unique_ptr<Task> make_causal_lm_task(const config::Recipe& recipe, torch::Device device,
                                          DataShard shard = {});

}  // namespace lowbit::train
