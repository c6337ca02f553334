// Loads a Hugging Face Llama-family checkpoint and reports what it cost:
// bytes read, the model's size, seconds and the process's peak resident set
// (VmHWM), then generates a few tokens greedily. With --nf4 (--int8) the
// q/k/v/o and MLP projections are quantized to NF4 (int8) while being read.
//
//   lowbit-hf-load load <dir> [--nf4|--int8] [--dtype float32|bfloat16] [--generate N]
//   lowbit-hf-load write <dir> llama-3.2-1b|llama-2-7b|tiny   random bf16 weights in HF layout
//   lowbit-hf-load random llama-3.2-1b|llama-2-7b|tiny [load options]
//       write into a temporary directory, load it in a fresh process (so the
//       peak is the load's alone), delete the directory
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "examples/error_text.h"
#include "io/hf_config.h"
#include "lora/quantize_model.h"
#include "nn/generate.h"
#include "nn/hf_causal_lm.h"

extern char** environ;

namespace {

using lowbit::io::LlamaConfig;

// The shapes of meta-llama/Llama-3.2-1B and Llama-2-7b-hf (their published
// config.json files), or a tiny one for a quick check.
LlamaConfig shape(const std::string& name) {
  LlamaConfig c;
  auto dims = [&](int64_t vocab, int64_t hidden, int64_t intermediate, int64_t layers,
                  int64_t heads, int64_t kv_heads) {
    c.vocab_size = vocab;
    c.hidden_size = hidden;
    c.intermediate_size = intermediate;
    c.num_hidden_layers = layers;
    c.num_attention_heads = heads;
    c.num_key_value_heads = kv_heads;
    c.head_dim = hidden / heads;
  };
  if (name == "llama-3.2-1b") {
    dims(128256, 2048, 8192, 16, 32, 8);
    c.max_position_embeddings = 131072;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 500000;
    c.rope_scaling = {lowbit::io::RopeType::Llama3, 32.0, 1.0, 4.0, 8192};
    c.tie_word_embeddings = true;
    c.bos_token_id = 128000;
    c.eos_token_ids = {128001};
  } else if (name == "llama-2-7b") {
    dims(32000, 4096, 11008, 32, 32, 32);
    c.max_position_embeddings = 4096;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000;
    c.tie_word_embeddings = false;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
  } else if (name == "tiny") {
    dims(256, 64, 128, 2, 4, 2);
  } else {
    throw std::runtime_error("unknown shape '" + name +
                             "'; expected llama-3.2-1b, llama-2-7b or tiny");
  }
  c.torch_dtype = torch::kBFloat16;
  return c;
}

double gib(double bytes) { return bytes / double(1 << 30); }

int64_t status_kib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field + ":", 0) == 0) return std::atoll(line.c_str() + field.size() + 1);
  return -1;
}

int write_random(const std::string& dir, const std::string& name) {
  torch::manual_seed(0);
  const LlamaConfig config = shape(name);
  lowbit::nn::LlamaForCausalLM model(
      config, lowbit::nn::random_llama_weights(config.initializer_range, torch::kBFloat16));
  lowbit::nn::HfSaveOptions save;
  save.max_shard_bytes = uint64_t(1) << 30;  // several shards at 1B
  save_hf_causal_lm(*model, dir, save);
  std::cout << "wrote random " << name << " (bf16) to " << dir << "\n";
  return 0;
}

int load(const std::string& dir, const std::vector<std::string>& args) {
  lowbit::nn::HfLoadOptions options;
  int64_t generate = 8;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--nf4") {
      options.quantize = true;
    } else if (args[i] == "--int8") {
      options.quantize = true;
      options.int8 = lowbit::lora::Linear8bitOptions();
    } else if (args[i] == "--dtype" && i + 1 < args.size()) {
      const std::string d = args[++i];
      if (d != "float32" && d != "bfloat16") throw std::runtime_error("--dtype float32|bfloat16");
      options.dtype = d == "float32" ? torch::kFloat32 : torch::kBFloat16;
      options.linear4bit.compute_dtype(options.dtype);
    } else if (args[i] == "--generate" && i + 1 < args.size()) {
      generate = std::atoll(args[++i].c_str());
    } else {
      throw std::runtime_error("unknown option '" + args[i] + "'");
    }
  }
  const int64_t baseline_kib = status_kib("VmRSS");
  lowbit::nn::HfLoadReport report;
  lowbit::nn::LlamaForCausalLM model = load_hf_causal_lm(dir, options, &report);
  const lowbit::lora::ModelSize size = lowbit::lora::model_size(*model);
  std::cout << std::fixed << std::setprecision(3) << "loaded " << dir << ": "
            << report.tensors_read << " tensors, " << gib(double(report.bytes_read))
            << " GiB read, " << report.quantized_layers << " layers quantized, in "
            << report.seconds << " s\n"
            << "model: " << size.params << " params, " << gib(double(size.bytes)) << " GiB ("
            << size.bits_per_param() << " bits/param)\n"
            << "peak RSS (VmHWM) " << gib(double(status_kib("VmHWM")) * 1024)
            << " GiB; RSS now " << gib(double(status_kib("VmRSS")) * 1024)
            << " GiB; before loading " << gib(double(baseline_kib) * 1024) << " GiB\n";
  if (generate > 0) {
    model->eval();
    lowbit::nn::GenerationOptions greedy;
    greedy.max_new_tokens = generate;
    const std::vector<int64_t> prompt = {int64_t(report.config.bos_token_id.value_or(1)), 5, 6, 7};
    const auto start = std::chrono::steady_clock::now();
    const auto tokens = lowbit::nn::generate(*model, prompt, greedy);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "generated " << tokens.size() << " tokens greedily in " << seconds << " s:";
    for (int64_t t : tokens) std::cout << " " << t;
    std::cout << "\n";
  }
  return 0;
}

// Runs this program again with `args` and waits for it.
int run_self(const std::vector<std::string>& args) {
  std::vector<std::string> argv_storage = {"/proc/self/exe"};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0)
    throw std::runtime_error("cannot start a child process");
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int random_round_trip(const std::string& name, const std::vector<std::string>& load_args) {
  std::string pattern = (std::filesystem::temp_directory_path() / "lowbit_hf_XXXXXX").string();
  if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  int rc = run_self({"write", pattern, name});
  if (rc == 0) {
    std::vector<std::string> args = {"load", pattern};
    args.insert(args.end(), load_args.begin(), load_args.end());
    rc = run_self(args);
  }
  std::filesystem::remove_all(pattern);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() >= 3 && args[0] == "write") return write_random(args[1], args[2]);
    if (args.size() >= 2 && args[0] == "load")
      return load(args[1], std::vector<std::string>(args.begin() + 2, args.end()));
    if (args.size() >= 2 && args[0] == "random")
      return random_round_trip(args[1], std::vector<std::string>(args.begin() + 2, args.end()));
    std::cerr << "usage: lowbit-hf-load load <dir> [--nf4|--int8] [--dtype float32|bfloat16] "
                 "[--generate N]\n"
                 "       lowbit-hf-load write <dir> llama-3.2-1b|llama-2-7b|tiny\n"
                 "       lowbit-hf-load random llama-3.2-1b|llama-2-7b|tiny [load options]\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "lowbit-hf-load: " << lowbit::error_text(e) << "\n";
    return 1;
  }
}
