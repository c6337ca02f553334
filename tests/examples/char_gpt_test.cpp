// The character-level GPT: layer names QLoRA relies on, causal masking,
// attention against a double-precision reference written here, layers swapped
// through replace_module being the ones that run, and learning real text.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/data/text_corpus.h"
#include "examples/models/char_gpt.h"

namespace lowbit::models {
namespace {

CharGPTOptions tiny() { return CharGPTOptions().block_size(16).n_layer(2).n_head(2).n_embd(8); }

TEST(CharGPT, NamesItsLinearLayersForQLoRA) {
  torch::manual_seed(0);
  CharGPT model(tiny());
  std::map<std::string, std::vector<int64_t>> linears;
  for (const auto& item : model->named_modules()) {
    if (auto* l = item.value()->as<torch::nn::Linear>())
      linears[item.key()] = l->weight.sizes().vec();
  }
  const std::map<std::string, std::vector<int64_t>> expected = {{"blocks.0.attn.qkv", {24, 8}},
                                                                {"blocks.0.attn.proj", {8, 8}},
                                                                {"blocks.0.mlp.fc1", {32, 8}},
                                                                {"blocks.0.mlp.fc2", {8, 32}},
                                                                {"blocks.1.attn.qkv", {24, 8}},
                                                                {"blocks.1.attn.proj", {8, 8}},
                                                                {"blocks.1.mlp.fc1", {32, 8}},
                                                                {"blocks.1.mlp.fc2", {8, 32}},
                                                                {"lm_head", {97, 8}}};
  EXPECT_EQ(linears, expected);
}

TEST(CharGPT, EarlierLogitsIgnoreLaterTokens) {
  torch::manual_seed(1);
  CharGPT model(tiny());
  const torch::Tensor ids = torch::randint(97, {3, 12}, torch::kInt64);
  torch::Tensor changed = ids.clone();
  changed.slice(1, 7).random_(0, 97);
  const torch::Tensor a = model->forward(ids), b = model->forward(changed);
  // Positions 0..6 see identical prefixes: bit-identical logits.
  EXPECT_TRUE(a.slice(1, 0, 7).equal(b.slice(1, 0, 7)));
  EXPECT_FALSE(a.slice(1, 7).equal(b.slice(1, 7)));
  EXPECT_THROW(model->forward(torch::zeros({1, 17}, torch::kInt64)), c10::Error);  // > block_size
  EXPECT_THROW(model->forward(torch::full({1, 2}, 97, torch::kInt64)), c10::Error);
}

// softmax(q·kᵀ/√d + causal mask)·v per head, then the output projection, in
// double precision with plain loops.
TEST(CausalSelfAttention, MatchesADoublePrecisionReference) {
  torch::manual_seed(2);
  const int64_t B = 2, T = 5, C = 8, H = 2, D = C / H;
  CausalSelfAttention attn(tiny());
  torch::Tensor x = torch::randn({B, T, C});
  const torch::Tensor y = attn->forward(x);

  auto params = attn->named_parameters();
  const torch::Tensor wqkv = params["qkv.weight"].to(torch::kFloat64);
  const torch::Tensor bqkv = params["qkv.bias"].to(torch::kFloat64);
  const torch::Tensor wp = params["proj.weight"].to(torch::kFloat64);
  const torch::Tensor bp = params["proj.bias"].to(torch::kFloat64);
  const auto xd = x.to(torch::kFloat64);
  auto W = wqkv.accessor<double, 2>();
  auto Bq = bqkv.accessor<double, 1>();
  auto X = xd.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b) {
    // qkv[t][j] = bias[j] + sum_c W[j][c] x[t][c]
    std::vector<std::vector<double>> qkv(T, std::vector<double>(3 * C));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t j = 0; j < 3 * C; ++j) {
        double s = Bq[j];
        for (int64_t c = 0; c < C; ++c) s += W[j][c] * X[b][t][c];
        qkv[t][j] = s;
      }
    }
    std::vector<std::vector<double>> heads_out(T, std::vector<double>(C, 0.0));
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> score(t + 1);
        double top = -1e300;
        for (int64_t u = 0; u <= t; ++u) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += qkv[t][h * D + d] * qkv[u][C + h * D + d];
          score[u] = s / std::sqrt(double(D));
          top = std::max(top, score[u]);
        }
        double total = 0;
        for (double& s : score) total += (s = std::exp(s - top));
        for (int64_t u = 0; u <= t; ++u) {
          for (int64_t d = 0; d < D; ++d) {
            heads_out[t][h * D + d] += score[u] / total * qkv[u][2 * C + h * D + d];
          }
        }
      }
    }
    auto P = wp.accessor<double, 2>();
    auto Bp = bp.accessor<double, 1>();
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t o = 0; o < C; ++o) {
        double s = Bp[o];
        for (int64_t c = 0; c < C; ++c) s += P[o][c] * heads_out[t][c];
        // float32 rounding of O(1) values through sums of 8 terms: ~1e-6.
        EXPECT_NEAR(y[b][t][o].item<double>(), s, 1e-5) << b << " " << t << " " << o;
      }
    }
  }
}

TEST(CharGPT, RunsTheLinearThatReplaceModuleInstalled) {
  // Two models from the same seed start identical.
  torch::manual_seed(3);
  CharGPT swapped(tiny());
  torch::manual_seed(3);
  CharGPT reference(tiny());
  const torch::Tensor ids = torch::randint(97, {2, 10}, torch::kInt64);
  const torch::Tensor before = swapped->forward(ids);

  // The reference doubles fc1's weight in place; the other model gets a new
  // Linear holding the doubled weight through replace_module.
  torch::nn::Linear doubled(8, 32);
  {
    torch::NoGradGuard no_grad;
    auto params = reference->named_parameters();
    params["blocks.1.mlp.fc1.weight"].mul_(2);
    doubled->weight.copy_(params["blocks.1.mlp.fc1.weight"]);
    doubled->bias.copy_(params["blocks.1.mlp.fc1.bias"]);
  }
  auto& mlp = *swapped->named_modules()["blocks.1.mlp"];
  mlp.replace_module("fc1", doubled);
  const torch::Tensor after = swapped->forward(ids);
  EXPECT_FALSE(after.equal(before));
  EXPECT_TRUE(after.equal(reference->forward(ids)));

  mlp.replace_module("fc1", torch::nn::Identity());
  try {
    swapped->forward(ids);
    ADD_FAILURE() << "an unknown layer type must be refused";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'fc1'"), std::string::npos) << e.what();
  }
}

TEST(CharGPT, LearnsTheKjv) {
  torch::manual_seed(4);
  const data::TextSplit text = data::split_documents(data::read_kjv(), 0.1);
  const int64_t block = 32;
  CharGPT model(CharGPTOptions().block_size(block).n_layer(1).n_head(2).n_embd(32));
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-2));
  const data::TextBatch valid = data::evaluation_windows(text.valid, block, 64);
  auto valid_loss = [&] {
    torch::NoGradGuard no_grad;
    return torch::cross_entropy_loss(model->forward(valid.input).flatten(0, 1),
                                     valid.target.flatten())
        .item<double>();
  };
  // Small initial logits give a near-uniform prediction: loss ≈ ln(97).
  EXPECT_NEAR(valid_loss(), std::log(97.0), 0.05);

  // The unigram entropy of the training text: what a model that ignores the
  // context can reach at best.
  const torch::Tensor p =
      torch::bincount(text.train, {}, 97).to(torch::kFloat64) / double(text.train.numel());
  const double unigram = -(p * p.clamp_min(1e-300).log()).sum().item<double>();
  for (int64_t step = 0; step < 150; ++step) {
    const data::TextBatch batch = data::sample_windows(text.train, 32, block, 5, step);
    adam.zero_grad();
    torch::cross_entropy_loss(model->forward(batch.input).flatten(0, 1), batch.target.flatten())
        .backward();
    adam.step();
  }
  EXPECT_LT(valid_loss(), unigram - 0.2) << "unigram entropy " << unigram;
}

}  // namespace
}  // namespace lowbit::models
