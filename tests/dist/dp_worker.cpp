// One rank of a data-parallel training run, for tests/dist/data_parallel_test.cpp:
//   lowbit_dist_worker OUT OPTIMIZER STEPS [MODE]
// Rank r of WORLD_SIZE (from the environment; one process without it) trains a small MLP with
// OPTIMIZER (adamw8bit or lamb8bit; zero-adamw8bit or zero-lamb8bit for ZeRO-1 states) on a
// global batch of 32 rows per step, drawn from a fixed seed (the same batch on every rank),
// using rows [32 r / N, 32 (r + 1) / N): the loss is the mean over those rows and the
// gradients are averaged over the ranks. Writes the parameters to OUT.<rank> (torch::save) and
// the optimizer's state bytes to OUT.<rank>.bytes. MODE "grads": writes the first step's
// averaged gradients instead. MODE "die": rank 1 kills itself once the group has started (the
// others must fail, not hang). MODE "broadcast": rank r seeds its initialisation with 7 + r and
// then takes rank 0's by broadcast_parameters. MODE "other-model": rank 1 builds a wider model
// (every rank must refuse to train).
#include <torch/torch.h>

#include <csignal>
#include <fstream>
#include <iostream>
#include <string>

#include "dist/data_parallel.h"
#include "dist/zero.h"
#include "optim/optim.h"

namespace {

constexpr int64_t kBatch = 32, kIn = 64, kClasses = 10;

int run(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: lowbit_dist_worker OUT OPTIMIZER STEPS [grads|die|other-model]\n";
    return 2;
  }
  const std::string out = argv[1], optimizer = argv[2], mode = argc > 4 ? argv[4] : "";
  const int steps = std::stoi(argv[3]);
  const lowbit::dist::Env env = lowbit::dist::env_from_environment();
  lowbit::dist::Group group(env, std::chrono::seconds(10));
  if (mode == "die" && env.rank == 1) std::raise(SIGKILL);

  // MODE "broadcast": each rank initialises from its own seed, then takes rank 0's values.
  torch::manual_seed(mode == "broadcast" ? 7 + env.rank : 7);
  const int64_t hidden = mode == "other-model" && env.rank == 1 ? 160 : 128;
  torch::nn::Sequential model(torch::nn::Linear(kIn, hidden), torch::nn::Tanh(),
                              torch::nn::Linear(hidden, kClasses));
  std::unique_ptr<lowbit::optim::Optimizer8bit> opt;
  std::unique_ptr<lowbit::dist::ZeroOptimizer> zero;
  if (optimizer == "zero-adamw8bit")
    zero = std::make_unique<lowbit::dist::ZeroOptimizer>(
        group, model->parameters(), [](std::vector<torch::Tensor> shards) {
          return std::make_unique<lowbit::optim::AdamW8bit>(std::move(shards),
                                                            lowbit::optim::AdamW8bitOptions(1e-2));
        });
  else if (optimizer == "zero-lamb8bit")
    zero = std::make_unique<lowbit::dist::ZeroOptimizer>(
        group, model->parameters(), [](std::vector<torch::Tensor> shards) {
          return std::make_unique<lowbit::optim::LAMB8bit>(std::move(shards),
                                                           lowbit::optim::LAMB8bitOptions(1e-2));
        });
  else if (optimizer == "adamw8bit")
    opt = std::make_unique<lowbit::optim::AdamW8bit>(model->parameters(),
                                                     lowbit::optim::AdamW8bitOptions(1e-2));
  else if (optimizer == "lamb8bit")
    opt = std::make_unique<lowbit::optim::LAMB8bit>(model->parameters(),
                                                    lowbit::optim::LAMB8bitOptions(1e-2));
  else
    throw std::invalid_argument("unknown optimizer '" + optimizer + "'");

  if (mode == "broadcast") lowbit::dist::broadcast_parameters(group, model->parameters());
  const int64_t begin = kBatch * env.rank / env.world_size;
  const int64_t end = kBatch * (env.rank + 1) / env.world_size;
  torch::Generator data = at::detail::createCPUGenerator(1234);
  for (int step = 0; step < steps; ++step) {
    const auto x = torch::randn({kBatch, kIn}, data);
    const auto y = torch::randint(kClasses, {kBatch}, data);
    if (zero)
      zero->zero_grad();
    else
      opt->zero_grad();
    const auto loss = torch::nn::functional::cross_entropy(
        model->forward(x.slice(0, begin, end)), y.slice(0, begin, end));
    loss.backward();
    lowbit::dist::average_gradients(group, model->parameters());
    if (mode == "grads") {
      std::vector<torch::Tensor> grads;
      for (const auto& p : model->parameters()) grads.push_back(p.grad());
      torch::save(grads, out + "." + std::to_string(env.rank));
      return 0;
    }
    if (zero)
      zero->step();
    else
      opt->step();
  }
  torch::save(model->parameters(), out + "." + std::to_string(env.rank));
  std::ofstream(out + "." + std::to_string(env.rank) + ".bytes")
      << (zero ? zero->state_bytes() : opt->state_bytes());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "lowbit_dist_worker: " << e.what() << "\n";
    return 1;
  }
}
