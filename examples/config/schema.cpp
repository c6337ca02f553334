#include "examples/config/schema.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace lowbit::config {
namespace {

using Names = std::vector<std::string>;

const Names kEightBit = {"adam8bit", "adamw8bit", "lion8bit", "lamb8bit", "rmsprop8bit"};
const Names kTorch = {"adam", "adamw", "rmsprop", "sgd"};

Names join(const Names& a, const Names& b) {
  Names out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

// Builders that keep the table below one line per key.
KeySpec key(std::string path, Kind kind, std::string default_yaml, std::string help) {
  KeySpec k;
  k.path = std::move(path);
  k.kind = kind;
  k.default_yaml = std::move(default_yaml);
  k.help = std::move(help);
  return k;
}
KeySpec required(KeySpec k) {
  k.required = true;
  return k;
}
KeySpec range(KeySpec k, double min, double max, bool min_exclusive = false) {
  k.min = min;
  k.max = max;
  k.min_exclusive = min_exclusive;
  return k;
}
KeySpec choices(KeySpec k, Names c) {
  k.choices = std::move(c);
  return k;
}
KeySpec sized(KeySpec k, int n) {
  k.list_size = n;
  return k;
}
KeySpec only(KeySpec k, std::string selector, Names values) {
  k.selector = std::move(selector);
  k.applies_to = std::move(values);
  return k;
}

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<KeySpec> build() {
  const Names optimizers = join(kEightBit, kTorch);
  const Names text = {"kjv", "fortunes", "jsonl", "text"};
  const Names llms = {"hf_causal_lm", "llama"};
  const Names transformers = {"char_gpt", "llama"};
  return {
      // model
      required(choices(key("model.name", Kind::Choice, "", "network to train"),
                       {"mlp", "cnn", "char_gpt", "hf_causal_lm", "llama"})),
      only(key("model.path", Kind::String, "\"\"",
               "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json "
               "or tokenizer.model)"),
           "model.name", {"hf_causal_lm"}),
      only(key("model.adapter", Kind::String, "\"\"",
               "PEFT adapter folder (adapter_config.json, adapter_model.safetensors) loaded onto "
               "the model: trained on, or used by --generate/--merge; without a lora section its "
               "config sets r, alpha, target; with one they must match"),
           "model.name", {"hf_causal_lm"}),
      only(choices(key("model.dtype", Kind::Choice, "fp32",
                       "dtype of the weights kept in full precision, and of activations"),
                   {"fp32", "bf16"}),
           "model.name", llms),
      only(range(key("model.hidden", Kind::IntList, "[256]", "hidden layer widths"), 1, 65536),
           "model.name", {"mlp"}),
      only(sized(range(key("model.channels", Kind::IntList, "[32, 64]",
                           "channels of the two conv layers"),
                       1, 1024),
                 2),
           "model.name", {"cnn"}),
      range(key("model.dropout", Kind::Float, "0.0", "dropout probability"), 0, 0.95),
      only(range(key("model.block_size", Kind::Int, "128",
                     "context length in characters (char_gpt) or tokens (packed training windows)"),
                 1, 1 << 20),
           "model.name", join(transformers, {"hf_causal_lm"})),
      only(range(key("model.n_layer", Kind::Int, "4", "transformer blocks"), 1, 256), "model.name",
           transformers),
      only(range(key("model.n_head", Kind::Int, "4", "attention heads"), 1, 256), "model.name",
           transformers),
      only(range(key("model.n_embd", Kind::Int, "128", "embedding width (multiple of n_head)"), 1,
                 65536),
           "model.name", transformers),
      only(range(key("model.n_kv_head", Kind::Int, "0",
                     "key/value heads, dividing n_head (0: n_head; fewer: grouped-query)"),
                 0, 256),
           "model.name", {"llama"}),
      only(range(key("model.intermediate_size", Kind::Int, "0",
                     "SwiGLU width (0: 8/3 n_embd rounded up to a multiple of 32)"),
                 0, 1 << 20),
           "model.name", {"llama"}),
      only(range(key("model.rope_theta", Kind::Float, "10000", "rotary embedding base"), 1, kInf),
           "model.name", {"llama"}),
      only(range(key("model.vocab_size", Kind::Int, "2000",
                     "size of the SentencePiece BPE tokenizer trained on the training text"),
                 100, 1 << 20),
           "model.name", {"llama"}),
      only(key("model.gradient_checkpointing", Kind::Bool, "false",
               "recompute each decoder layer in backward instead of keeping its activations"),
           "model.name", llms),
      key("model.init", Kind::String, "\"\"",
          "weights to start from: a run's model.pt or checkpoint (empty: random init)"),
      // data
      required(choices(key("data.name", Kind::Choice, "", "data set"),
                       {"fashion_mnist", "kjv", "fortunes", "jsonl", "text"})),
      key("data.path", Kind::String, "\"\"",
          "data location (empty: the Debian package's: /usr/share/datasets/fashion-mnist, "
          "/usr/lib, /usr/share/games/fortunes); the file for jsonl and text"),
      only(key("data.prompt_template", Kind::String, "\"{prompt}\\n\"",
               "how a JSONL record's prompt is shown ({prompt} is replaced); the loss covers "
               "the response only"),
           "data.name", {"jsonl"}),
      only(key("data.files", Kind::StringList, "[]", "fortune files to read (empty: all)"),
           "data.name", {"fortunes"}),
      range(key("data.train_limit", Kind::Int, "0",
                "use only the first N training images or documents (0: all)"),
            0, kInf),
      range(key("data.eval_limit", Kind::Int, "0",
                "evaluate on the first N test images or N validation windows (0: all)"),
            0, kInf),
      only(range(key("data.valid_fraction", Kind::Float, "0.1",
                     "share of documents held out for validation"),
                 0, 0.9, true),
           "data.name", text),
      // optimizer (unset hyper-parameters take the optimizer's own default)
      required(choices(key("optimizer.name", Kind::Choice, "",
                           "8-bit optimizer, or a torch::optim one for comparison"),
                       optimizers)),
      range(key("optimizer.lr", Kind::Float, "", "learning rate (peak, under a schedule)"), 0, 10,
            true),
      only(sized(range(key("optimizer.betas", Kind::FloatList, "", "[beta1, beta2]"), 0, 0.9999999),
                 2),
           "optimizer.name", {"adam8bit", "adamw8bit", "lion8bit", "lamb8bit", "adam", "adamw"}),
      only(range(key("optimizer.eps", Kind::Float, "", "denominator epsilon"), 0, 1),
           "optimizer.name",
           {"adam8bit", "adamw8bit", "lamb8bit", "rmsprop8bit", "adam", "adamw", "rmsprop"}),
      range(key("optimizer.weight_decay", Kind::Float, "", "weight decay"), 0, 10),
      only(range(key("optimizer.momentum", Kind::Float, "", "momentum"), 0, 0.9999999),
           "optimizer.name", {"rmsprop8bit", "rmsprop", "sgd"}),
      only(range(key("optimizer.alpha", Kind::Float, "", "RMSprop smoothing constant"), 0,
                 0.9999999),
           "optimizer.name", {"rmsprop8bit", "rmsprop"}),
      only(key("optimizer.nesterov", Kind::Bool, "", "Nesterov momentum"), "optimizer.name",
           {"sgd"}),
      only(key("optimizer.amsgrad", Kind::Bool, "", "AMSGrad variant"), "optimizer.name",
           {"adam", "adamw"}),
      only(choices(key("optimizer.optim_bits", Kind::Int, "",
                       "8: quantized states, 32: the same update with fp32 states"),
                   {"8", "32"}),
           "optimizer.name", kEightBit),
      only(range(key("optimizer.min_8bit_size", Kind::Int, "",
                     "tensors with fewer elements keep fp32 states"),
                 0, kInf),
           "optimizer.name", kEightBit),
      only(range(key("optimizer.percentile_clipping", Kind::Int, "",
                     "clip gradients at this percentile of the last 100 norms (100: off)"),
                 1, 100),
           "optimizer.name", kEightBit),
      only(range(key("optimizer.max_unorm", Kind::Float, "",
                     "cap the update norm at max_unorm * |param| (0: off)"),
                 0, kInf),
           "optimizer.name", kEightBit),
      only(choices(key("optimizer.block_size", Kind::Int, "",
                       "elements per absmax block of 8-bit states"),
                   {"64", "128", "256", "512", "1024", "2048", "4096"}),
           "optimizer.name", kEightBit),
      only(key("optimizer.fp32_params", Kind::StringList, "[]",
               "regexes of parameter names whose states stay 32-bit (e.g. tok_emb)"),
           "optimizer.name", kEightBit),
      only(choices(key("optimizer.nonfinite", Kind::Choice, "skip_step",
                       "a gradient with NaN/inf: skip the step, raise, or skip its blocks"),
                   {"skip_step", "raise", "skip_blocks"}),
           "optimizer.name", kEightBit),
      // schedule
      choices(key("schedule.name", Kind::Choice, "constant", "learning-rate schedule"),
              {"constant", "linear", "cosine"}),
      range(key("schedule.warmup_steps", Kind::Int, "0", "linear warmup from 0 over N steps"), 0,
            kInf),
      only(range(key("schedule.min_lr_ratio", Kind::Float, "0.0", "final lr as a share of lr"), 0,
                 1),
           "schedule.name", {"linear", "cosine"}),
      // train
      range(key("train.epochs", Kind::Int, "0", "passes over the training set (or set steps)"), 0,
            kInf),
      range(key("train.steps", Kind::Int, "0", "optimizer steps (or set epochs)"), 0, kInf),
      range(key("train.batch_size", Kind::Int, "64", "examples (or windows) per micro-batch"), 1,
            1 << 20),
      range(key("train.grad_accum", Kind::Int, "1", "micro-batches per optimizer step"), 1, 4096),
      range(key("train.grad_clip", Kind::Float, "0.0", "clip the gradient norm to this (0: off)"),
            0, kInf),
      range(key("train.seed", Kind::Int, "0", "seed of initialisation, data order and dropout"), 0,
            kInf),
      range(key("train.threads", Kind::Int, "0", "CPU threads (0: torch's default)"), 0, 1024),
      range(key("train.eval_every", Kind::Int, "0",
                "evaluate every N steps (0: after each epoch, or at the end of a steps run)"),
            0, kInf),
      // quant
      key("quant.enabled", Kind::Bool, "",
          "quantize the base linears (default: on when the "
          "quant section is present)"),
      choices(key("quant.type", Kind::Choice, "nf4",
                  "format of the converted linears: 4-bit nf4 / fp4, or int8 (LLM.int8())"),
              {"nf4", "fp4", "int8"}),
      range(key("quant.threshold", Kind::Float, "0.0",
                "int8 layers: LLM.int8() outlier threshold (0: off; the paper uses 6.0)"),
            0, kInf),
      key("quant.overrides", Kind::StringList, "[]",
          "per-layer formats, \"PATTERN=FORMAT\" (nf4, fp4, int8, none); the first match wins"),
      choices(key("quant.block_size", Kind::Int, "64", "values per absmax block"),
              {"32", "64", "128", "256", "512", "1024", "2048", "4096"}),
      key("quant.double_quant", Kind::Bool, "true", "quantize the absmax too (QLoRA)"),
      choices(
          key("quant.compute_dtype", Kind::Choice, "fp32", "matmul dtype (fp16: device cuda only)"),
          {"fp32", "bf16", "fp16"}),
      key("quant.skip", Kind::StringList, "[\"lm_head\"]",
          "regexes of linear layers kept in full precision (hf_causal_lm: of the seven "
          "projections the loader quantizes; embeddings and lm_head always stay)"),
      // lora
      key("lora.enabled", Kind::Bool, "",
          "add LoRA adapters (default: on when the lora section is present)"),
      range(key("lora.r", Kind::Int, "8", "adapter rank"), 1, 4096),
      range(key("lora.alpha", Kind::Float, "16", "scaling numerator (alpha/r, or alpha/sqrt(r))"),
            0, kInf, true),
      range(key("lora.dropout", Kind::Float, "0.0", "dropout on the adapter path"), 0, 0.95),
      key("lora.rslora", Kind::Bool, "false", "rank-stabilised scaling alpha/sqrt(r)"),
      key("lora.target", Kind::StringList, "[\".*\"]", "regexes of linear layers to adapt"),
      choices(key("lora.dtype", Kind::Choice, "fp16",
                  "adapter storage (computed in quant.compute_dtype); torch optimizers need fp32"),
              {"fp16", "bf16", "fp32"}),
      // device and backend
      choices(key("device", Kind::Choice, "auto",
                  "where the model and the training run: auto = cuda when this build has the "
                  "CUDA backend and a GPU is visible (and backend is auto), else cpu"),
              {"auto", "cpu", "cuda"}),
      choices(key("backend", Kind::Choice, "auto",
                  "kernels backend of a CPU run (auto: OpenCL GPU, else CPU); a CUDA run uses "
                  "the CUDA backend"),
              {"auto", "cpu", "opencl"}),
      // distributed (several processes: lowbit-train --nproc, or RANK and WORLD_SIZE set)
      key("distributed.zero", Kind::Bool, "false",
          "with several processes: ZeRO-1, each process keeps the optimizer states of its share "
          "of the blocks (8-bit optimizers, not with fp32_params; checkpoints resume on any "
          "number of processes)"),
      range(key("distributed.timeout", Kind::Int, "300",
                "with several processes: seconds the start-up and each collective wait for the "
                "others before the run stops with an error"),
            1, 86400),
      // checkpoint
      key("checkpoint.dir", Kind::String, "\"\"", "run directory (empty: runs/<recipe name>)"),
      range(key("checkpoint.every", Kind::Int, "0", "save every N steps (0: at the end only)"), 0,
            kInf),
      range(key("checkpoint.keep", Kind::Int, "3", "newest checkpoints kept"), 1, kInf),
      key("checkpoint.resume", Kind::String, "auto",
          "auto (newest complete checkpoint), never, or a checkpoint file"),
      // log
      key("log.metrics", Kind::String, "\"\"",
          "metrics JSONL (empty: <checkpoint.dir>/metrics.jsonl)"),
      key("log.plot", Kind::String, "\"\"", "SVG plot (empty: <checkpoint.dir>/metrics.svg)"),
      choices(
          key("log.progress", Kind::Choice, "auto", "auto: a bar on a terminal, lines otherwise"),
          {"auto", "bar", "lines", "none"}),
      range(key("log.every", Kind::Int, "50", "steps between progress lines"), 1, kInf),
      // generate (language models)
      only(key("generate.prompts", Kind::StringList, "[]",
               "prompts the model continues before and after training"),
           "model.name", llms),
      only(range(key("generate.max_new_tokens", Kind::Int, "48", "tokens per continuation"), 1,
                 1 << 16),
           "model.name", llms),
      only(range(key("generate.temperature", Kind::Float, "0",
                     "sampling temperature (0: greedy decoding)"),
                 0, 100),
           "model.name", llms),
      only(range(key("generate.top_k", Kind::Int, "0", "sample from the k most likely (0: all)"), 0,
                 kInf),
           "model.name", llms),
      only(range(key("generate.top_p", Kind::Float, "1.0", "nucleus sampling mass"), 0, 1, true),
           "model.name", llms),
  };
}

std::string number(double x) {
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os << x;
  return os.str();
}

std::string kind_name(Kind k) {
  switch (k) {
    case Kind::Int:
      return "an integer";
    case Kind::Float:
      return "a number";
    case Kind::Bool:
      return "true or false";
    case Kind::String:
      return "a string";
    case Kind::Choice:
      return "one of";
    case Kind::IntList:
      return "a list of integers";
    case Kind::FloatList:
      return "a list of numbers";
    case Kind::StringList:
      return "a list of strings";
  }
  return "";
}

}  // namespace

bool is_torch_optimizer(const std::string& name) {
  return std::find(kTorch.begin(), kTorch.end(), name) != kTorch.end();
}

std::string joined(const std::vector<std::string>& names, const std::string& prefix) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + prefix + n;
  return out;
}

const std::vector<KeySpec>& recipe_schema() {
  static const std::vector<KeySpec> schema = build();
  return schema;
}

const KeySpec* find_key(const std::string& path) {
  for (const KeySpec& k : recipe_schema()) {
    if (k.path == path) return &k;
  }
  return nullptr;
}

std::vector<std::string> schema_sections() {
  std::vector<std::string> sections;
  for (const KeySpec& k : recipe_schema()) {
    const size_t dot = k.path.find('.');
    if (dot == std::string::npos) continue;
    const std::string section = k.path.substr(0, dot);
    if (std::find(sections.begin(), sections.end(), section) == sections.end()) {
      sections.push_back(section);
    }
  }
  return sections;
}

std::string describe_allowed(const KeySpec& k) {
  if (!k.choices.empty()) return "one of " + joined(k.choices);
  std::string out = kind_name(k.kind);
  if (k.list_size >= 0) {
    out = "a list of " + std::to_string(k.list_size) +
          (k.kind == Kind::IntList     ? " integers"
           : k.kind == Kind::FloatList ? " numbers"
                                       : " strings");
  }
  const bool bounded_below = !std::isinf(k.min), bounded_above = !std::isinf(k.max);
  if (bounded_below && bounded_above) {
    out += std::string(" in ") + (k.min_exclusive ? "(" : "[") + number(k.min) + ", " +
           number(k.max) + "]";
  } else if (bounded_below) {
    out += (k.min_exclusive ? " > " : " >= ") + number(k.min);
  }
  return out;
}

std::string schema_reference() {
  std::ostringstream os;
  for (const KeySpec& k : recipe_schema()) {
    os << std::left << std::setw(28) << k.path << k.help << "\n"
       << std::setw(28) << "" << describe_allowed(k);
    if (k.required) {
      os << "; required";
    } else if (!k.default_yaml.empty()) {
      os << "; default " << k.default_yaml;
    }
    if (!k.selector.empty()) os << "; only when " << k.selector << " is " << joined(k.applies_to);
    os << "\n";
  }
  return os.str();
}

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const std::string& c : candidates) {
    // Levenshtein distance, one row at a time.
    std::vector<size_t> row(c.size() + 1);
    for (size_t j = 0; j <= c.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= word.size(); ++i) {
      size_t diagonal = row[0];
      row[0] = i;
      for (size_t j = 1; j <= c.size(); ++j) {
        const size_t substitute = diagonal + (word[i - 1] == c[j - 1] ? 0 : 1);
        diagonal = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
      }
    }
    if (row[c.size()] < best_distance) {
      best_distance = row[c.size()];
      best = c;
    }
  }
  return best;
}

}  // namespace lowbit::config
