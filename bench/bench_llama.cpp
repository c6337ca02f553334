// A ~100M-parameter Llama-shaped model (width 768, 12 layers, 12 heads with 4
// key/value heads (GQA), SwiGLU 2048, vocab 32000, tied embeddings:
// 100.1M parameters), read from a random float32 checkpoint in Hugging Face
// layout, in one run:
//   training, one sequence of 256 tokens per step, tokens/s and peak RSS:
//     full_fp32_adamw        every parameter, torch::optim::AdamW (baseline)
//     lora_fp32_adamw8bit    fp32 base, LoRA r 16 on the seven projections,
//                            AdamW8bit on the (fp16) adapters
//     qlora_nf4_adamw8bit    the same on an NF4 base (double quantization,
//                            block 64) read straight into 4 bits
//   generation, batch 1, greedy with the KV cache, decode tokens/s:
//     generate_fp32 (baseline), generate_nf4
//
// Memory is measured honestly per setup: each runs in a fresh process (this
// binary re-executed with --setup=NAME), which reports the peak resident set
// (VmHWM) of the whole process (load included) and, separately, the peak
// during the timed steps alone (VmHWM reset through /proc/self/clear_refs
// once the model is loaded and prepared). The parent only writes the
// checkpoint and collects the reports.
//
// Times: training is the mean of 3 steps after 1 warm-up step; decode is
// (time of 1 + 32 new tokens - time of 1 new token) / 32 after a 16-token
// prompt, so the prompt's prefill is not counted. --threads=N (default 1:
// on a VM whose cores other work shares, one preempted thread of two stalls
// every parallel call) sets the threads of every setup.
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "bench/child_process.h"
#include "bench/ratio_reporter.h"
#include "kernels/blas_core.h"
#include "lora/apply_lora.h"
#include "nn/generate.h"
#include "nn/hf_causal_lm.h"
#include "optim/optim.h"

namespace lowbit::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int64_t kSeq = 256, kTrainSteps = 3, kPrompt = 16, kNewTokens = 32;

io::LlamaConfig model_shape() {
  io::LlamaConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 768;
  c.intermediate_size = 2048;
  c.num_hidden_layers = 12;
  c.num_attention_heads = 12;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.max_position_embeddings = kSeq;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  c.torch_dtype = torch::kFloat32;
  return c;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

nn::LlamaForCausalLM load(const std::string& dir, bool nf4) {
  nn::HfLoadOptions options;
  options.quantize = nf4;
  return nn::load_hf_causal_lm(dir, options);
}

// One training setup in this process; prints its report line.
int run_training_setup(const std::string& setup, const std::string& dir) {
  const bool nf4 = setup == "qlora_nf4_adamw8bit";
  const auto start = Clock::now();
  nn::LlamaForCausalLM model = load(dir, nf4);
  std::vector<torch::Tensor> trainable;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (setup == "full_fp32_adamw") {
    trainable = model->parameters();
    optimizer = std::make_unique<torch::optim::AdamW>(trainable, torch::optim::AdamWOptions(1e-4));
  } else {
    lora::LoraConfig config;
    config.r = 16;
    config.lora_alpha = 32;
    config.target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                             "gate_proj", "up_proj", "down_proj"};
    trainable = lora::apply_lora(*model, config);
    optimizer = std::make_unique<optim::AdamW8bit>(trainable, optim::AdamW8bitOptions(1e-4));
  }
  const double load_s = seconds_since(start);
  int64_t trainable_count = 0;
  for (const auto& p : trainable) trainable_count += p.numel();
  model->train();
  malloc_trim(0);
  const long long setup_kib = status_kib("VmHWM:");
  if (!reset_peak()) {
    std::fprintf(stderr, "cannot reset the peak RSS through /proc/self/clear_refs\n");
    return 1;
  }
  torch::manual_seed(1);
  const torch::Tensor ids =
      torch::randint(0, model_shape().vocab_size, {1, kSeq + 1}, torch::kInt64);
  const torch::Tensor input = ids.slice(1, 0, kSeq), target = ids.slice(1, 1).reshape({-1});
  double timed = 0;
  for (int64_t step = 0; step <= kTrainSteps; ++step) {
    const auto t = Clock::now();
    optimizer->zero_grad();
    const torch::Tensor logits = model->forward(input);
    torch::nn::functional::cross_entropy(logits.reshape({kSeq, -1}), target).backward();
    optimizer->step();
    if (step > 0) timed += seconds_since(t);  // step 0 warms up
  }
  std::printf(
      "setup=%s step_s=%.6f tokens=%lld load_s=%.3f trainable=%lld setup_peak_kib=%lld "
      "step_peak_kib=%lld\n",
      setup.c_str(), timed / double(kTrainSteps), static_cast<long long>(kSeq), load_s,
      static_cast<long long>(trainable_count), setup_kib, status_kib("VmHWM:"));
  return 0;
}

int run_generation_setup(const std::string& setup, const std::string& dir) {
  const auto start = Clock::now();
  nn::LlamaForCausalLM model = load(dir, setup == "generate_nf4");
  model->eval();
  const double load_s = seconds_since(start);
  malloc_trim(0);
  const long long setup_kib = status_kib("VmHWM:");
  if (!reset_peak()) return 1;
  torch::manual_seed(2);
  const torch::Tensor p = torch::randint(0, model_shape().vocab_size, {kPrompt}, torch::kInt64);
  const std::vector<int64_t> prompt(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + kPrompt);
  nn::GenerationOptions options;
  options.eos_token_ids = std::vector<int64_t>{};  // random weights: never stop early
  auto timed = [&](int64_t new_tokens) {
    options.max_new_tokens = new_tokens;
    const auto t = Clock::now();
    const auto out = nn::generate(*model, prompt, options);
    TORCH_CHECK(int64_t(out.size()) == new_tokens, "generated ", out.size(), " tokens");
    return seconds_since(t);
  };
  timed(1 + kNewTokens);  // warm-up
  const double decode_s = (timed(1 + kNewTokens) - timed(1)) / double(kNewTokens);
  std::printf(
      "setup=%s step_s=%.6f tokens=1 load_s=%.3f trainable=0 setup_peak_kib=%lld "
      "step_peak_kib=%lld\n",
      setup.c_str(), decode_s, load_s, setup_kib, status_kib("VmHWM:"));
  return 0;
}

struct Report {
  double step_s = 0, tokens = 0, load_s = 0, trainable = 0, setup_peak_kib = 0, step_peak_kib = 0;
};

double field(const std::string& line, const std::string& key) {
  const size_t at = line.find(" " + key + "=");
  return at == std::string::npos ? -1 : std::stod(line.substr(at + key.size() + 2));
}

// Runs this program with --setup=<setup> and parses its report line.
Report run_child(const std::string& setup, const std::string& dir) {
  const std::string out =
      run_self("bench_llama", {"--setup=" + setup, "--checkpoint=" + dir,
                               "--threads=" + std::to_string(torch::get_num_threads())});
  TORCH_CHECK(out.rfind("setup=", 0) == 0, "the --setup=", setup, " process failed");
  return {field(out, "step_s"),    field(out, "tokens"),         field(out, "load_s"),
          field(out, "trainable"), field(out, "setup_peak_kib"), field(out, "step_peak_kib")};
}

// The last report of each setup, in the order they ran first.
std::vector<std::pair<std::string, Report>>& reports() {
  static std::vector<std::pair<std::string, Report>> r;
  return r;
}

void keep_report(const std::string& setup, const Report& report) {
  for (auto& [name, r] : reports()) {
    if (name == setup) {
      r = report;
      return;
    }
  }
  reports().emplace_back(setup, report);
}

void register_setup(const std::string& setup, const std::string& group, const std::string& dir) {
  benchmark::RegisterBenchmark((setup + "/" + group).c_str(),
                               [=](benchmark::State& state) {
                                 for (auto _ : state) {
                                   const Report r = run_child(setup, dir);
                                   keep_report(setup, r);
                                   state.SetIterationTime(r.step_s);
                                   state.counters["tokens_per_s"] = r.tokens / r.step_s;
                                   state.counters["peak_MiB"] = r.setup_peak_kib / 1024;
                                   state.counters["step_peak_MiB"] = r.step_peak_kib / 1024;
                                 }
                               })
      ->Unit(benchmark::kMillisecond)
      ->UseManualTime()
      ->Iterations(1);
}

void print_memory_table() {
  std::printf("\n%-22s %12s %10s %14s %16s %10s\n", "setup", "tokens/s", "load s", "trainable",
              "process peak MiB", "step MiB");
  for (const auto& [setup, r] : reports())
    std::printf("%-22s %12.1f %10.2f %14.0f %16.1f %10.1f\n", setup.c_str(), r.tokens / r.step_s,
                r.load_s, r.trainable, std::max(r.setup_peak_kib, r.step_peak_kib) / 1024,
                r.step_peak_kib / 1024);
  std::printf(
      "process peak: VmHWM over the whole process (load and preparation included); "
      "step: VmHWM over the timed steps/tokens alone\n");
}

}  // namespace
}  // namespace lowbit::bench

int main(int argc, char** argv) {
  // torch's fp32 baselines with the widest kernels the process's OpenBLAS has for this CPU.
  lowbit::kernels::reload_with_wider_blas(argv);
  using namespace lowbit::bench;
  std::string setup, checkpoint, threads = "1";
  std::vector<char*> benchmark_args = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--setup=", 0) == 0) {
      setup = arg.substr(8);
    } else if (arg.rfind("--checkpoint=", 0) == 0) {
      checkpoint = arg.substr(13);
    } else if (arg.rfind("--threads=", 0) == 0) {
      threads = arg.substr(10);
    } else {
      benchmark_args.push_back(argv[i]);
    }
  }
  // torch's intra-op threads; ATen passes the count on to OpenMP, which the
  // 4-bit kernels and OpenBLAS (openmp build) use too.
  torch::set_num_threads(std::stoi(threads));
  if (!setup.empty()) {
    return setup.rfind("generate_", 0) == 0 ? run_generation_setup(setup, checkpoint)
                                            : run_training_setup(setup, checkpoint);
  }
  char pattern[] = "/tmp/bench_llama_XXXXXX";
  if (!mkdtemp(pattern)) return 1;
  const std::string dir = pattern;
  {
    torch::manual_seed(0);
    lowbit::nn::LlamaForCausalLM model(model_shape());
    int64_t params = 0;
    for (const auto& p : model->parameters()) params += p.numel();
    std::printf(
        "model: %lld parameters, width 768, 12 layers, 12 heads / 4 kv heads, vocab "
        "32000, tied embeddings; sequence %lld; %d threads\n",
        static_cast<long long>(params), static_cast<long long>(kSeq), torch::get_num_threads());
    lowbit::nn::save_hf_causal_lm(*model, dir);
  }
  malloc_trim(0);
  for (const char* s : {"full_fp32_adamw", "lora_fp32_adamw8bit", "qlora_nf4_adamw8bit"})
    register_setup(s, "train/seq256", dir);
  for (const char* s : {"generate_fp32", "generate_nf4"}) register_setup(s, "decode/batch1", dir);
  int benchmark_argc = int(benchmark_args.size());
  benchmark::Initialize(&benchmark_argc, benchmark_args.data());
  RatioReporter reporter(std::vector<std::string>{"full_fp32_adamw", "generate_fp32"});
  benchmark::RunSpecifiedBenchmarks(&reporter);
  print_memory_table();
  std::error_code ignored;
  fs::remove_all(dir, ignored);
  return 0;
}
