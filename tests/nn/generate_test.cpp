// Generation: greedy decoding through the KV cache equals argmax over full
// recomputation; sampling is reproducible from its seed and keeps to its
// top-k / top-p set; generation stops at eos.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include "nn/generate.h"
#include "nn/hf_causal_lm.h"
#include "tests/nn/tiny_llama.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::nn {
namespace {

using testing::ScratchDir;
using testing::TinyLlamaSpec;

class Generate : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_tiny_llama(dir_.path(), spec_);
    model_ = load_hf_causal_lm(dir_.path());
  }

  // The next-token logits from running the whole sequence, no cache.
  torch::Tensor full_logits(const std::vector<int64_t>& ids) {
    torch::NoGradGuard no_grad;
    return model_->forward(torch::tensor(ids, torch::kInt64).unsqueeze(0))[0][-1];
  }

  ScratchDir dir_;
  TinyLlamaSpec spec_;
  LlamaForCausalLM model_{nullptr};
  const std::vector<int64_t> prompt_ = {5, 17, 42, 8};
};

// No stop token, so every step runs.
GenerationOptions no_eos(GenerationOptions o) {
  o.eos_token_ids = std::vector<int64_t>{};
  return o;
}

TEST_F(Generate, GreedyEqualsArgmaxOfFullRecomputation) {
  GenerationOptions greedy;
  greedy.max_new_tokens = 10;
  const auto out = generate(*model_, prompt_, no_eos(greedy));
  ASSERT_EQ(out.size(), 10u);
  std::vector<int64_t> ids = prompt_;
  for (int64_t token : out) {
    EXPECT_EQ(token, full_logits(ids).argmax().item<int64_t>());
    ids.push_back(token);
  }
}

TEST_F(Generate, SamplingRepeatsForASeedAndTopKOfOneIsGreedy) {
  GenerationOptions sample;
  sample.do_sample = true;
  sample.max_new_tokens = 12;
  sample.temperature = 1.5;
  sample.seed = 3;
  const auto a = generate(*model_, prompt_, no_eos(sample));
  EXPECT_EQ(generate(*model_, prompt_, no_eos(sample)), a);
  // The tiny model is close to uniform at temperature 1.5: another seed
  // draws another sequence (the chance of 12 equal draws is negligible).
  sample.seed = 4;
  EXPECT_NE(generate(*model_, prompt_, no_eos(sample)), a);

  GenerationOptions greedy;
  greedy.max_new_tokens = 12;
  sample.top_k = 1;
  EXPECT_EQ(generate(*model_, prompt_, no_eos(sample)), generate(*model_, prompt_, no_eos(greedy)));
}

TEST_F(Generate, DrawsStayInsideTheTopKAndTopPSets) {
  const torch::Tensor logits = full_logits(prompt_) * 8.0;  // a peaked distribution
  const torch::Tensor probs = logits.softmax(0);
  const auto sorted = probs.sort(0, /*descending=*/true);
  const torch::Tensor order = std::get<1>(sorted);
  // The nucleus, computed here: the most likely tokens until their mass
  // reaches top_p.
  const double top_p = 0.6;
  std::set<int64_t> nucleus;
  double mass = 0;
  for (int64_t i = 0; i < order.numel() && mass < top_p; ++i) {
    nucleus.insert(order[i].item<int64_t>());
    mass += std::get<0>(sorted)[i].item<double>();
  }
  ASSERT_GT(nucleus.size(), 1u);
  ASSERT_LT(nucleus.size(), size_t(spec_.vocab) / 2);
  std::set<int64_t> top3;
  for (int64_t i = 0; i < 3; ++i) top3.insert(order[i].item<int64_t>());

  GenerationOptions p;
  p.do_sample = true;
  p.top_p = top_p;
  GenerationOptions k = p;
  k.top_p = 1.0;
  k.top_k = 3;
  at::Generator gen = at::detail::createCPUGenerator(11);
  std::set<int64_t> drawn_p, drawn_k;
  for (int i = 0; i < 400; ++i) {
    drawn_p.insert(next_token(logits, p, gen));
    drawn_k.insert(next_token(logits, k, gen));
  }
  for (int64_t t : drawn_p) EXPECT_TRUE(nucleus.count(t)) << t;
  for (int64_t t : drawn_k) EXPECT_TRUE(top3.count(t)) << t;
  EXPECT_EQ(drawn_k, top3);  // 400 draws reach each of the three

  // The filtered distribution renormalises over the kept set.
  const torch::Tensor filtered = sampling_probs(logits, p);
  EXPECT_NEAR(filtered.sum().item<double>(), 1.0, 1e-6);
  for (int64_t t = 0; t < spec_.vocab; ++t)
    EXPECT_EQ(filtered[t].item<float>() > 0, nucleus.count(t) == 1) << t;
}

TEST_F(Generate, StopsAtEos) {
  GenerationOptions greedy;
  greedy.max_new_tokens = 10;
  const auto free_run = generate(*model_, prompt_, no_eos(greedy));
  greedy.eos_token_ids = std::vector<int64_t>{free_run[2]};
  const auto stopped = generate(*model_, prompt_, greedy);
  const size_t first = size_t(std::find(free_run.begin(), free_run.end(), free_run[2]) - free_run.begin());
  EXPECT_EQ(stopped, std::vector<int64_t>(free_run.begin(), free_run.begin() + first + 1));
  EXPECT_THROW(generate(*model_, {}, greedy), c10::Error);
  greedy.top_p = 0;
  EXPECT_THROW(generate(*model_, prompt_, greedy), c10::Error);
}

}  // namespace
}  // namespace lowbit::nn
