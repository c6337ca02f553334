#include "nn/generate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>

namespace lowbit::nn {
namespace {

void check_options(const GenerationOptions& o) {
  TORCH_CHECK(o.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ",
              o.max_new_tokens);
  TORCH_CHECK(o.temperature > 0 && std::isfinite(o.temperature),
              "generate: temperature must be a positive number, got ", o.temperature);
  TORCH_CHECK(o.top_k >= 0, "generate: top_k must be >= 0 (0: off), got ", o.top_k);
  TORCH_CHECK(o.top_p > 0 && o.top_p <= 1, "generate: top_p must be in (0, 1], got ", o.top_p);
}

}  // namespace

torch::Tensor sampling_probs(const torch::Tensor& logits, const GenerationOptions& options) {
  check_options(options);
  TORCH_CHECK(logits.dim() == 1 && logits.numel() > 0, "sampling_probs: logits must be [vocab], got ",
              logits.sizes());
  constexpr float kDrop = -std::numeric_limits<float>::infinity();
  torch::Tensor scores = logits.to(torch::kCPU, torch::kFloat32) / options.temperature;
  const int64_t vocab = scores.numel();
  if (options.top_k > 0 && options.top_k < vocab) {
    const torch::Tensor kth = std::get<0>(scores.topk(options.top_k)).select(0, options.top_k - 1);
    scores = scores.masked_fill(scores < kth, kDrop);
  }
  if (options.top_p < 1.0) {
    // In descending order, a token is kept while the mass before it is
    // below top_p: the smallest prefix reaching top_p; the first always.
    const auto sorted = scores.sort(/*dim=*/0, /*descending=*/true);
    const torch::Tensor probs = std::get<0>(sorted).softmax(0);
    const torch::Tensor mass_before = probs.cumsum(0) - probs;
    torch::Tensor drop_sorted = mass_before >= options.top_p;
    drop_sorted[0].fill_(false);
    const torch::Tensor drop =
        torch::zeros_like(drop_sorted).scatter(0, std::get<1>(sorted), drop_sorted);
    scores = scores.masked_fill(drop, kDrop);
  }
  return scores.softmax(0);
}

int64_t next_token(const torch::Tensor& logits, const GenerationOptions& options,
                   at::Generator& generator) {
  if (!options.do_sample) {
    check_options(options);
    return logits.argmax().item<int64_t>();
  }
  return torch::multinomial(sampling_probs(logits, options), 1, /*replacement=*/false, generator)
      .item<int64_t>();
}

std::vector<int64_t> generate(LlamaForCausalLMImpl& model, const std::vector<int64_t>& prompt,
                              const GenerationOptions& options) {
  check_options(options);
  TORCH_CHECK(!prompt.empty(), "generate: the prompt is empty; give at least one token (e.g. bos)");
  const std::vector<int64_t> eos = options.eos_token_ids.value_or(model.config().eos_token_ids);
  torch::NoGradGuard no_grad;
  at::Generator generator = at::detail::createCPUGenerator(options.seed);
  const auto ids = torch::TensorOptions(torch::kInt64).device(model.device());
  LlamaKVCache cache;
  torch::Tensor input = torch::tensor(prompt, torch::kInt64).to(model.device()).unsqueeze(0);
  std::vector<int64_t> out;
  while (int64_t(out.size()) < options.max_new_tokens) {
    const torch::Tensor hidden = model.hidden_states(input, &cache);
    const torch::Tensor logits = model.logits(hidden.select(1, hidden.size(1) - 1)).squeeze(0);
    const int64_t token = next_token(logits, options, generator);
    out.push_back(token);
    if (std::find(eos.begin(), eos.end(), token) != eos.end()) break;
    input = torch::full({1, 1}, token, ids);
  }
  return out;
}

}  // namespace lowbit::nn
