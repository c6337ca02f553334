// Recipes for lowbit-train: a YAML file (or the embedded default recipe) plus
// `--set key=value` overrides, validated against the schema (config/schema.h)
// before anything runs, with defaults filled in, as typed sections. Every
// problem throws RecipeError naming where (file and line, or --set), the key,
// the value and what is allowed.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lowbit::config {

class RecipeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ModelRecipe {
  std::string name;  // mlp | cnn | char_gpt | hf_causal_lm | llama
  std::vector<int64_t> hidden;
  std::vector<int64_t> channels;
  double dropout = 0.0;
  int64_t block_size = 0, n_layer = 0, n_head = 0, n_embd = 0;
  std::string init;  // empty: random initialisation
  // Language models (hf_causal_lm: a checkpoint at `path`; llama: a fresh
  // model of these sizes with a tokenizer trained on the data).
  std::string path;
  std::string adapter;  // hf_causal_lm: a PEFT adapter folder to start from (empty: none)
  std::string dtype;  // fp32 | bf16
  int64_t n_kv_head = 0, intermediate_size = 0, vocab_size = 0;
  double rope_theta = 10000.0;
  bool gradient_checkpointing = false;
};

struct DataRecipe {
  std::string name;  // fashion_mnist | kjv | fortunes | jsonl | text
  std::string path;  // resolved: the package's location when the recipe leaves it empty
  std::string prompt_template;  // jsonl
  std::vector<std::string> files;
  int64_t train_limit = 0, eval_limit = 0;
  double valid_fraction = 0.1;
};

// Hyper-parameters left out of the recipe stay unset: the optimizer's own
// defaults apply.
struct OptimizerRecipe {
  std::string name;
  std::optional<double> lr, eps, weight_decay, momentum, alpha, max_unorm;
  std::optional<std::vector<double>> betas;
  std::optional<bool> nesterov, amsgrad;
  std::optional<int64_t> optim_bits, min_8bit_size, percentile_clipping, block_size;
  std::vector<std::string> fp32_params;  // 8-bit optimizers: names kept at 32-bit states
  std::string nonfinite;                 // 8-bit optimizers: skip_step | raise | skip_blocks
};

struct ScheduleRecipe {
  std::string name;  // constant | linear | cosine
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;
};

struct TrainRecipe {
  int64_t epochs = 0, steps = 0;  // exactly one is > 0
  int64_t batch_size = 64, grad_accum = 1;
  double grad_clip = 0.0;
  int64_t seed = 0, threads = 0, eval_every = 0;
};

struct QuantRecipe {
  bool enabled = false;
  std::string type;  // nf4 | fp4 | int8
  int64_t block_size = 64;
  bool double_quant = true;
  std::string compute_dtype;  // fp32 | bf16 | fp16
  std::vector<std::string> skip;
  double threshold = 0.0;                // int8 layers: LLM.int8() outlier threshold (0: off)
  std::vector<std::string> overrides;    // "PATTERN=FORMAT", see split_override
};

// A quant.overrides entry "PATTERN=FORMAT" split at its last '=' (formats
// hold none), or nullopt when either side is empty.
std::optional<std::pair<std::string, std::string>> split_override(const std::string& entry);

struct LoraRecipe {
  bool enabled = false;
  int64_t r = 8;
  double alpha = 16.0, dropout = 0.0;
  bool rslora = false;
  std::vector<std::string> target;
  std::string dtype;  // fp16 | bf16 | fp32
};

// Continuations the model writes before and after training (language models).
struct GenerateRecipe {
  std::vector<std::string> prompts;
  int64_t max_new_tokens = 48, top_k = 0;
  double temperature = 0.0, top_p = 1.0;  // temperature 0: greedy
};

// Several processes (lowbit-train --nproc, or RANK and WORLD_SIZE set): a
// process alone ignores it.
struct DistributedRecipe {
  bool zero = false;     // ZeRO-1: optimizer states sharded over the processes
  int64_t timeout = 300;  // seconds start-up and each collective may wait
};

struct CheckpointRecipe {
  std::string dir;  // resolved: runs/<recipe name> when left empty
  int64_t every = 0, keep = 3;
  std::string resume;  // auto | never | a checkpoint file
};

struct LogRecipe {
  std::string metrics, plot;  // resolved into checkpoint.dir when left empty
  std::string progress;       // auto | bar | lines | none
  int64_t every = 50;
};

struct Recipe {
  std::string name;    // the file's stem: names the default run directory
  std::string source;  // the file, or "<default recipe>"
  ModelRecipe model;
  DataRecipe data;
  OptimizerRecipe optimizer;
  ScheduleRecipe schedule;
  TrainRecipe train;
  QuantRecipe quant;
  LoraRecipe lora;
  // Resolved: cpu | cuda. values["device"] keeps what the recipe says (auto by
  // default), so a saved recipe still means "the best this machine has".
  std::string device;
  std::string backend;  // auto | cpu | opencl (CPU runs; a CUDA run uses the CUDA backend)
  DistributedRecipe distributed;
  CheckpointRecipe checkpoint;
  LogRecipe log;
  GenerateRecipe generate;
  // Every key that applies, with its value in canonical YAML text (defaults
  // and resolved paths included): printed by --print-recipe and stored in
  // checkpoints to detect a resume under a different recipe.
  std::map<std::string, std::string> values;
};

// Parses, applies the overrides ("optimizer.lr=3e-4"; values are YAML, so
// "optimizer.betas=[0.9, 0.95]" works), validates every key and cross-key
// rule, checks that the data files and model.init exist, resolves the
// defaults and the device (device: cuda where this build or machine has no
// CUDA is an error).
Recipe load_recipe_file(const std::string& path, const std::vector<std::string>& overrides = {});

// The same for YAML text; `name` and `source` label it in paths and messages.
Recipe load_recipe_text(const std::string& yaml, const std::string& name, const std::string& source,
                        const std::vector<std::string>& overrides = {});

// The recipe's values as a YAML document, sections in schema order.
std::string to_yaml(const Recipe& recipe);

// "key: saved -> now" for each key whose value differs between a recipe saved
// with to_yaml and `recipe` (a key present in one only counts), skipping keys
// equal to or under any of `ignored` ("log", "train.steps").
std::vector<std::string> changed_keys(const std::string& saved_yaml, const Recipe& recipe,
                                      const std::vector<std::string>& ignored);

}  // namespace lowbit::config
