#include "examples/train/causal_lm_task.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <torch/nn/functional/loss.h>

#include "examples/data/text_corpus.h"
#include "examples/data/token_corpus.h"
#include "examples/train/eval_scope.h"
#include "examples/train/prepare_model.h"
#include "nn/generate.h"
#include "nn/hf_causal_lm.h"
#include "nn/llama.h"
#include "text/tokenizer.h"
#include "text/train_sentencepiece.h"

namespace lowbit::train {
namespace {
namespace fs = std::filesystem;

// Files of a checkpoint folder besides config.json and the weights that
// transformers reads: the tokenizer's (AutoTokenizer) and generation_config.json.
constexpr const char* kTokenizerFiles[] = {
    "tokenizer.json",    "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.json",      "merges.txt",            "generation_config.json"};

torch::ScalarType model_dtype(const config::ModelRecipe& m) {
  return m.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;
}

std::vector<data::TextRecord> read_records(const config::DataRecipe& d) {
  std::vector<data::TextRecord> records;
  if (d.name == "kjv") {
    records = data::as_records(data::read_kjv(d.path));
  } else if (d.name == "fortunes") {
    records = data::as_records(data::read_fortunes(d.path, d.files));
  } else if (d.name == "jsonl") {
    data::RecordFormat format;
    format.prompt_template = d.prompt_template;
    records = data::read_jsonl(d.path, format);
  } else {
    records = data::read_text_documents(d.path);
  }
  if (d.train_limit > 0 && d.train_limit < int64_t(records.size()))
    records.resize(size_t(d.train_limit));
  return records;
}

// A SentencePiece BPE tokenizer of `vocab_size` trained on the training
// records, written into the run directory (deterministic: the same data and
// size give the same file, so a resumed run gets the same ids).
std::string train_tokenizer(const std::vector<data::TextRecord>& records, int64_t vocab_size,
                            const std::string& run_dir) {
  fs::create_directories(run_dir);
  const std::string corpus = (fs::path(run_dir) / "tokenizer_corpus.txt").string();
  {
    std::ofstream out(corpus, std::ios::binary | std::ios::trunc);
    for (const auto& r : records) out << r.prompt << r.text << '\n';
    TORCH_CHECK(out.good(), "cannot write ", corpus);
  }
  const std::string model =
      text::train_sentencepiece(corpus, (fs::path(run_dir) / "tokenizer").string(), int(vocab_size));
  fs::remove(corpus);
  return model;
}

io::LlamaConfig fresh_config(const config::ModelRecipe& m, const text::Tokenizer& tokenizer) {
  io::LlamaConfig c;
  c.vocab_size = tokenizer.vocab_size();
  c.hidden_size = m.n_embd;
  // SwiGLU at the parameter count of a 4x MLP (Shazeer 2020; Llama rounds up).
  c.intermediate_size =
      m.intermediate_size > 0 ? m.intermediate_size : (8 * m.n_embd / 3 + 31) / 32 * 32;
  c.num_hidden_layers = m.n_layer;
  c.num_attention_heads = m.n_head;
  c.num_key_value_heads = m.n_kv_head > 0 ? m.n_kv_head : m.n_head;
  c.head_dim = m.n_embd / m.n_head;
  c.max_position_embeddings = m.block_size;
  c.rope_theta = m.rope_theta;
  c.rms_norm_eps = 1e-5;
  c.torch_dtype = model_dtype(m);
  if (tokenizer.bos_id()) c.bos_token_id = *tokenizer.bos_id();
  if (tokenizer.eos_id()) c.eos_token_ids = {*tokenizer.eos_id()};
  c.validate("the recipe's model section");
  return c;
}

class CausalLmTask : public Task {
 public:
  CausalLmTask(const config::Recipe& r, torch::Device device, DataShard shard)
      : r_(r), device_(device), shard_(shard), block_(r.model.block_size) {
    std::vector<data::TextRecord> records = read_records(r.data);
    records_ = int64_t(records.size());
    const data::RecordSplit split = data::split_records(records, r.data.valid_fraction);
    const std::string export_dir = (fs::path(r.checkpoint.dir) / "hf").string();
    if (r.model.name == "llama") {
      if (shard.rank == 0) {
        tokenizer_file_ = train_tokenizer(split.train, r.model.vocab_size, r.checkpoint.dir);
        tokenizer_ = text::load_tokenizer(tokenizer_file_);
      } else {
        // The other ranks train the same tokenizer (deterministic) in a folder of their own:
        // only rank 0 writes into the run directory.
        const fs::path scratch = fs::temp_directory_path() /
                                 ("lowbit-tokenizer-rank" + std::to_string(shard.rank) + "-" +
                                  std::to_string(::getpid()));
        tokenizer_ = text::load_tokenizer(
            train_tokenizer(split.train, r.model.vocab_size, scratch.string()));
        fs::remove_all(scratch);
      }
      model_ = nn::LlamaForCausalLM(fresh_config(r.model, *tokenizer_));
      model_->to(model_dtype(r.model));
      source_ = "a fresh Llama-shaped model";
    } else {
      tokenizer_ = text::load_tokenizer(r.model.path);
      nn::HfLoadOptions options;
      options.dtype = model_dtype(r.model);
      options.quantize = r.quant.enabled;
      options.modules_to_not_convert = r.quant.skip;
      options.linear4bit = linear4bit_options(r.quant, nullptr);
      if (r.quant.type == "int8") options.int8 = int8_options(r.quant, nullptr);
      nn::HfLoadReport report;
      model_ = nn::load_hf_causal_lm(r.model.path, options, &report);
      source_ = r.model.path;
      if (r.quant.enabled) {
        std::ostringstream os;
        os << report.quantized_layers << " projections read into " << r.quant.type
           << (options.int8 ? " Linear8bit" : " Linear4bit") << " layers while loading "
           << report.tensors_read << " tensors (" << report.bytes_read << " bytes on disk)";
        quantized_ = os.str();
      }
    }
    model_->to(device_);
    if (r.model.gradient_checkpointing) model_->set_gradient_checkpointing(true);
    const auto encode = [this](const std::string& s) { return tokenizer_->encode(s, false); };
    std::optional<int64_t> bos, eos;
    if (tokenizer_->bos_id()) bos = *tokenizer_->bos_id();
    if (tokenizer_->eos_id()) eos = *tokenizer_->eos_id();
    train_ = data::tokenize_records(split.train, encode, bos, eos);
    valid_ = data::tokenize_records(split.valid, encode, bos, eos);
    const int64_t valid_windows = data::packed_windows(valid_, block_);
    TORCH_CHECK(valid_windows >= 1, "data: the validation text holds ", valid_.ids.numel(),
                " tokens, too few for one window of model.block_size ", block_,
                " + 1; raise data.valid_fraction or lower model.block_size");
    TORCH_CHECK(data::packed_windows(train_, block_) >= 1, "data: the training text holds ",
                train_.ids.numel(), " tokens, too few for one window of model.block_size ",
                block_, " + 1");
    train_batches_.emplace(train_, block_, r.train.batch_size, uint64_t(r.train.seed));
    eval_windows_ = r.data.eval_limit > 0 ? std::min(r.data.eval_limit, valid_windows) : valid_windows;
    per_epoch_ = std::max<int64_t>(1, data::packed_windows(train_, block_) / r.train.batch_size);
  }

  std::shared_ptr<torch::nn::Module> module() const override { return model_.ptr(); }
  int64_t batches_per_epoch() const override { return per_epoch_; }

  torch::Tensor loss(int64_t index) override {
    const data::PackedBatch b = train_batches_->batch(index);
    if (shard_.ranks == 1) return token_loss(b, at::Reduction::Mean);
    // The whole batch's mean is its loss sum over its learned tokens: this rank's sum over
    // that same count, times the ranks, averages to it.
    const int64_t n = b.input.size(0), begin = shard_.begin(n), end = shard_.end(n);
    if (begin == end) return {};
    const double learned =
        double(std::max<int64_t>(b.labels.ne(data::kIgnore).sum().item<int64_t>(), 1));
    const data::PackedBatch mine{b.input.slice(0, begin, end), b.labels.slice(0, begin, end)};
    return token_loss(mine, at::Reduction::Sum) * (double(shard_.ranks) / learned);
  }

  Evaluation evaluate() override {
    EvalScope scope(*model_);
    double loss_sum = 0.0;
    int64_t tokens = 0;
    for (int64_t first = 0; first < eval_windows_; first += r_.train.batch_size) {
      const int64_t count = std::min(r_.train.batch_size, eval_windows_ - first);
      const data::PackedBatch b = data::packed_range(valid_, block_, first, count);
      loss_sum += token_loss(b, at::Reduction::Sum).item<double>();
      tokens += b.labels.ne(data::kIgnore).sum().item<int64_t>();
    }
    const double loss = loss_sum / double(std::max<int64_t>(tokens, 1));
    Evaluation e;
    e.loss = loss;
    e.perplexity = std::exp(loss);
    return e;
  }

  std::string describe() const override {
    std::ostringstream os;
    os << r_.data.name << ": " << records_ << " records, " << train_.ids.numel()
       << " training tokens (" << data::packed_windows(train_, block_) << " windows of " << block_
       << ", " << per_epoch_ << " batches per epoch), " << eval_windows_
       << " validation windows; tokenizer of " << tokenizer_->vocab_size() << " tokens"
       << (tokenizer_file_.empty() ? "" : " trained into " + tokenizer_file_) << "; model from "
       << source_;
    return os.str();
  }

  std::vector<std::string> continue_prompts(const std::vector<std::string>& prompts) override {
    const config::GenerateRecipe& g = r_.generate;
    nn::GenerationOptions options;
    options.max_new_tokens = g.max_new_tokens;
    options.do_sample = g.temperature > 0.0;
    options.temperature = g.temperature > 0.0 ? g.temperature : 1.0;
    options.top_k = g.top_k;
    options.top_p = g.top_p;
    options.seed = uint64_t(r_.train.seed);
    if (tokenizer_->eos_id()) options.eos_token_ids = std::vector<int64_t>{*tokenizer_->eos_id()};
    EvalScope scope(*model_);
    std::vector<std::string> out;
    for (const std::string& prompt : prompts) {
      const std::vector<int32_t> ids = tokenizer_->encode(prompt, true);
      const std::vector<int64_t> next =
          nn::generate(*model_, std::vector<int64_t>(ids.begin(), ids.end()), options);
      out.push_back(tokenizer_->decode(std::vector<int32_t>(next.begin(), next.end()), true));
    }
    return out;
  }

  std::vector<std::string> export_model() override {
    if (r_.model.name != "llama") return {};  // a fine-tune's product is its adapter
    const std::string dir = (fs::path(r_.checkpoint.dir) / "hf").string();
    save_hf(dir);
    return {dir};
  }

  void save_hf(const std::string& dir) override {
    nn::save_hf_causal_lm(*model_, dir);
    if (!tokenizer_file_.empty()) {
      fs::copy_file(tokenizer_file_, fs::path(dir) / "tokenizer.model",
                    fs::copy_options::overwrite_existing);
      return;
    }
    // The checkpoint's own tokenizer files, so the folder loads on its own.
    for (const char* file : kTokenizerFiles) {
      const fs::path from = fs::path(r_.model.path) / file;
      if (fs::is_regular_file(from))
        fs::copy_file(from, fs::path(dir) / file, fs::copy_options::overwrite_existing);
    }
  }

  std::string quantized_on_load() const override { return quantized_; }

 private:
  // Cross-entropy over the learned tokens (labels other than kIgnore), in
  // float32 whatever the model's dtype.
  torch::Tensor token_loss(const data::PackedBatch& b, at::Reduction::Reduction reduction) {
    const torch::Tensor logits = model_->forward(b.input.to(device_));
    const torch::Tensor labels = b.labels.to(device_).flatten();
    const torch::Tensor sum = torch::nn::functional::cross_entropy(
        logits.flatten(0, 1).to(torch::kFloat32), labels,
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(data::kIgnore).reduction(
            torch::kSum));
    if (reduction == at::Reduction::Sum) return sum;
    // A window may hold prompt tokens only: its mean counts at least one token.
    return sum / labels.ne(data::kIgnore).sum().clamp_min(1).to(sum.scalar_type());
  }

  const config::Recipe& r_;
  torch::Device device_;
  DataShard shard_;
  int64_t block_;
  int64_t records_ = 0, per_epoch_ = 1, eval_windows_ = 0;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::string tokenizer_file_, source_, quantized_;
  nn::LlamaForCausalLM model_{nullptr};
  data::TokenStream train_, valid_;
  std::optional<data::PackedBatches> train_batches_;
};

}  // namespace

std::unique_ptr<Task> make_causal_lm_task(const config::Recipe& recipe, torch::Device device,
                                          DataShard shard) {
  return std::make_unique<CausalLmTask>(recipe, device, shard);
}

}  // namespace lowbit::train
