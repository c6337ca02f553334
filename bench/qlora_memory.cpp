// Peak resident memory of a training step: QLoRA (NF4 base with double
// quantization, LoRA r = 16 on every attention and MLP linear, AdamW on the
// adapters) against a full float32 fine-tune (AdamW on every parameter) of
// the same character-level GPT (examples/models/char_gpt, 6 layers, width
// 1024: 76M parameters, so the weights dominate). Each mode runs in its own
// process (`qlora_memory --mode=full|qlora`); run without arguments, the
// program runs both and prints the ratio.
//
// The peak is the kernel's resident high-water mark (VmHWM) over two
// optimizer steps, reset (clear_refs) once the model is built, quantized and
// adapted: building the float32 model before quantizing it is setup, not part
// of a training step. The setup's own peak (getrusage maxrss before the reset,
// which clear_refs resets too) is printed alongside.
#include <malloc.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <string>

#include <torch/torch.h>

#include "bench/child_process.h"
#include "examples/models/char_gpt.h"
#include "lora/apply_lora.h"
#include "lora/quantize_model.h"

namespace {

using namespace lowbit;
using bench::reset_peak;
using bench::status_kib;

constexpr int64_t kTokens = 32;  // one sequence per step: activations stay small

int run_mode(const std::string& mode) {
  torch::manual_seed(0);
  models::CharGPT gpt(models::CharGPTOptions().n_layer(6).n_head(8).n_embd(1024).block_size(kTokens));
  int64_t params = 0;
  for (const auto& p : gpt->parameters()) params += p.numel();
  std::vector<torch::Tensor> trainable;
  if (mode == "qlora") {
    lora::QuantizeConfig q;
    q.modules_to_not_convert = {"lm_head"};
    lora::quantize_model(*gpt, q);
    lora::LoraConfig config;
    config.r = 16;
    config.lora_alpha = 32;
    config.target_modules = {"qkv", "proj", "fc1", "fc2"};
    // float32 adapters, so that libtorch's AdamW can step them; in float16
    // they would hold 6 MB less.
    config.dtype = torch::kFloat32;
    trainable = lora::apply_lora(*gpt, config);
  } else {
    trainable = gpt->parameters();
  }
  int64_t trainable_count = 0;
  for (const auto& p : trainable) trainable_count += p.numel();
  torch::optim::AdamW optimizer(trainable, torch::optim::AdamWOptions(1e-4));
  malloc_trim(0);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const long setup_peak_kib = usage.ru_maxrss;
  const int64_t setup_kib = status_kib("VmRSS:");
  if (!reset_peak()) {
    std::fprintf(stderr, "cannot reset the peak RSS through /proc/self/clear_refs\n");
    return 1;
  }
  const torch::Tensor ids = torch::randint(0, 97, {1, kTokens + 1}, torch::kInt64);
  const torch::Tensor input = ids.slice(1, 0, kTokens), target = ids.slice(1, 1);
  for (int step = 0; step < 2; ++step) {
    optimizer.zero_grad();
    const torch::Tensor logits = gpt->forward(input);
    torch::nn::functional::cross_entropy(logits.reshape({-1, 97}), target.reshape({-1})).backward();
    optimizer.step();
  }
  std::printf("mode=%s params=%lld trainable=%lld setup_peak_kib=%ld setup_kib=%lld "
              "step_peak_kib=%lld\n",
              mode.c_str(), static_cast<long long>(params), static_cast<long long>(trainable_count),
              setup_peak_kib, static_cast<long long>(setup_kib),
              static_cast<long long>(status_kib("VmHWM:")));
  return 0;
}

// Runs this program with --mode=<mode> and returns its report line.
std::string run_child(const std::string& mode) {
  return lowbit::bench::run_self("qlora_memory", {"--mode=" + mode});
}

long long field(const std::string& line, const std::string& key) {
  const size_t at = line.find(key + "=");
  return at == std::string::npos ? -1 : std::stoll(line.substr(at + key.size() + 1));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strncmp(argv[1], "--mode=", 7) == 0) {
    const std::string mode = argv[1] + 7;
    if (mode == "full" || mode == "qlora") return run_mode(mode);
  }
  if (argc != 1) {
    std::fprintf(stderr, "usage: qlora_memory [--mode=full|qlora]\n");
    return 2;
  }
  const std::string full = run_child("full"), qlora = run_child("qlora");
  if (full.empty() || qlora.empty()) {
    std::fprintf(stderr, "a measuring process failed\n");
    return 1;
  }
  std::printf("%s%s", full.c_str(), qlora.c_str());
  const double f = double(field(full, "step_peak_kib")), q = double(field(qlora, "step_peak_kib"));
  std::printf("\n%-8s %16s %16s %16s\n", "mode", "setup peak MiB", "after setup MiB",
              "step peak MiB");
  for (const std::string* line : {&full, &qlora})
    std::printf("%-8s %16.1f %16.1f %16.1f\n", line == &full ? "full" : "qlora",
                double(field(*line, "setup_peak_kib")) / 1024, double(field(*line, "setup_kib")) / 1024,
                double(field(*line, "step_peak_kib")) / 1024);
  std::printf("QLoRA step peak / full fine-tune step peak = %.1f%%\n", 100.0 * q / f);
  return 0;
}
