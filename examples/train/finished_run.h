// A run's model used without training (lowbit-train --generate and --merge):
// built as the recipe builds it (run_model.h), given the newest weights the
// run wrote (model.pt of a finished run, else its newest checkpoint; a run
// that wrote neither keeps the recipe's starting model, e.g. a checkpoint
// with model.adapter's PEFT adapter, and says so).
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "examples/config/recipe.h"

namespace lowbit::train {

// Prints "[prompt] -> continuation" for each prompt (empty: the recipe's
// generate.prompts) with the recipe's generate settings. Language models
// only; no prompts at all is an error.
void generate_from_run(const config::Recipe& recipe, const std::vector<std::string>& prompts,
                       std::ostream& out);

// Writes the run's model into `out_dir` (empty: <checkpoint.dir>/merged) in
// Hugging Face layout: config.json, model.safetensors (4-bit layers
// dequantized, LoRA adapters folded in, in model.dtype) and the source
// checkpoint's tokenizer files. Returns the folder.
std::string merge_run(const config::Recipe& recipe, const std::string& out_dir, std::ostream& out);

}  // namespace lowbit::train
