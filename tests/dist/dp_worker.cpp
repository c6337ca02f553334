// One rank of a data-parallel training run, for tests/dist/*_test.cpp:
//   lowbit_dist_worker OUT OPTIMIZER STEPS [MODE] [KEY=VALUE...]
// Rank r of WORLD_SIZE (from the environment; one process without it) trains a small MLP with
// OPTIMIZER on a global batch of 32 rows per step, drawn from a fixed seed (the same batch on
// every rank), using rows [32 r / N, 32 (r + 1) / N): the loss is the mean over those rows and
// the gradients are averaged over the ranks. OPTIMIZER is adamw8bit or lamb8bit, prefixed
// "zero-" for ZeRO-1 states, suffixed "-clip" for percentile clipping (5th percentile) and/or
// "-unorm" for max_unorm 0.5 (e.g. zero-adamw8bit-clip-unorm). Writes the parameters to
// OUT.<rank> (torch::save) and the optimizer's state bytes to OUT.<rank>.bytes.
// MODE "grads": writes the first step's averaged gradients instead. MODE "die": rank 1 kills
// itself once the group has started (the others must fail, not hang). MODE "broadcast": rank r
// seeds its initialisation with 7 + r and then takes rank 0's by broadcast_parameters. MODE
// "other-model": rank 1 builds a wider model (every rank must refuse to train). MODE
// "other-recipe": with a ZeRO optimizer, rank 1 adds percentile clipping (every rank must refuse).
// Settings: hidden=H (the hidden width, 128); save=1 (after the steps, rank 0 writes the
// parameters to OUT.params and the optimizer writes its state dict to OUT.ckpt: ZeroOptimizer's
// save, or torch::save of the single-process optimizer); resume=PREFIX and from=K (before
// training, load PREFIX.params and PREFIX.ckpt, skip the first K batches and train steps K to
// STEPS - 1; the state dict just loaded is written back to OUT.reloaded, as save=1 writes it);
// fsize=N (with save=1: the state dict's file may grow to N bytes, so its save fails);
// device=cuda (the model, its batches and the optimizer's states on cuda:0; what the worker
// writes is moved to the CPU); nccl=1 (with device=cuda: the group carries CUDA tensors through
// NCCL, and opens its store and process groups even as a group of one); accum=A (the rank's
// rows in A micro-batches, each backward adding its share of the loss); overlap=1 (the
// gradients averaged by dist::OverlappedAverage during the last micro-batch's backward).
#include <sys/resource.h>

#include <torch/torch.h>

#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include "dist/data_parallel.h"
#include "dist/zero.h"
#include "optim/optim.h"

namespace {

constexpr int64_t kBatch = 32, kIn = 64, kClasses = 10;
constexpr double kLr = 1e-2;

bool ends_with(const std::string& s, const std::string& end) {
  return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
}

// An optimizer from its name in the usage above, over `params`.
std::unique_ptr<lowbit::optim::Optimizer8bit> make_optimizer(std::string name,
                                                             std::vector<torch::Tensor> params) {
  lowbit::optim::StateSettings settings;
  for (bool more = true; more;) {
    more = false;
    if (ends_with(name, "-clip")) {
      settings.percentile_clipping = 5;
      name.resize(name.size() - 5);
      more = true;
    }
    if (ends_with(name, "-unorm")) {
      settings.max_unorm = 0.5;
      name.resize(name.size() - 6);
      more = true;
    }
  }
  if (name == "adamw8bit") {
    lowbit::optim::AdamW8bitOptions options(kLr);
    options.state_settings() = settings;
    return std::make_unique<lowbit::optim::AdamW8bit>(std::move(params), options);
  }
  if (name == "lamb8bit") {
    lowbit::optim::LAMB8bitOptions options(kLr);
    options.state_settings() = settings;
    return std::make_unique<lowbit::optim::LAMB8bit>(std::move(params), options);
  }
  throw std::invalid_argument("unknown optimizer '" + name + "'");
}

int run(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: lowbit_dist_worker OUT OPTIMIZER STEPS [MODE] [KEY=VALUE...]\n";
    return 2;
  }
  const std::string out = argv[1], optimizer = argv[2];
  const int steps = std::stoi(argv[3]);
  std::string mode;
  std::map<std::string, std::string> settings;
  for (int i = 4; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto eq = arg.find('=');
    if (eq == std::string::npos)
      mode = arg;
    else
      settings[arg.substr(0, eq)] = arg.substr(eq + 1);
  }
  const auto setting = [&](const std::string& key, const std::string& otherwise) {
    const auto it = settings.find(key);
    return it == settings.end() ? otherwise : it->second;
  };
  const lowbit::dist::Env env = lowbit::dist::env_from_environment();
  const torch::Device device(setting("device", "cpu"));
  lowbit::dist::GroupOptions group_options;
  if (setting("nccl", "0") == "1") {
    group_options.nccl_device = 0;
    group_options.connect_alone = true;
  }
  lowbit::dist::Group group(env, std::chrono::seconds(10), group_options);
  if (mode == "die" && env.rank == 1) std::raise(SIGKILL);

  // MODE "broadcast": each rank initialises from its own seed, then takes rank 0's values.
  torch::manual_seed(mode == "broadcast" ? 7 + env.rank : 7);
  const int64_t hidden =
      mode == "other-model" && env.rank == 1 ? 160 : std::stoll(setting("hidden", "128"));
  torch::nn::Sequential model(torch::nn::Linear(kIn, hidden), torch::nn::Tanh(),
                              torch::nn::Linear(hidden, kClasses));
  model->to(device);
  // What the worker writes: the tensors on the CPU, wherever they trained.
  const auto on_cpu = [](const std::vector<torch::Tensor>& tensors) {
    std::vector<torch::Tensor> out;
    for (const auto& t : tensors) out.push_back(t.detach().cpu());
    return out;
  };
  std::unique_ptr<lowbit::optim::Optimizer8bit> opt;
  std::unique_ptr<lowbit::dist::ZeroOptimizer> zero;
  if (optimizer.rfind("zero-", 0) == 0) {
    // MODE "other-recipe": rank 1 adds percentile clipping (every rank must refuse).
    const std::string local =
        optimizer.substr(5) + (mode == "other-recipe" && env.rank == 1 ? "-clip" : "");
    zero = std::make_unique<lowbit::dist::ZeroOptimizer>(
        group, model->parameters(), [local](std::vector<torch::Tensor> tensors) {
          return make_optimizer(local, std::move(tensors));
        });
  } else {
    opt = make_optimizer(optimizer, model->parameters());
  }
  // The optimizer's state dict, as each kind writes it.
  const auto save_optimizer = [&](const std::string& path) {
    if (zero)
      zero->save(path);
    else if (env.rank == 0)
      torch::save(*opt, path);
  };

  if (mode == "broadcast") lowbit::dist::broadcast_parameters(group, model->parameters());
  int first = 0;
  if (settings.count("resume")) {
    const std::string from = settings["resume"];
    std::vector<torch::Tensor> saved;
    torch::load(saved, from + ".params");
    torch::NoGradGuard no_grad;
    auto params = model->parameters();
    if (saved.size() != params.size())
      throw std::runtime_error(from + ".params holds " + std::to_string(saved.size()) +
                               " tensors; the model has " + std::to_string(params.size()));
    // A tensor of another shape (hidden=H differs from the saved run's) stays as it is, so
    // that the optimizer's load is the one to refuse the checkpoint.
    for (size_t k = 0; k < params.size(); ++k)
      if (saved[k].sizes() == params[k].sizes()) params[k].copy_(saved[k].to(device));
    if (zero)
      zero->load(from + ".ckpt");
    else
      torch::load(*opt, from + ".ckpt");
    save_optimizer(out + ".reloaded");
    first = std::stoi(setting("from", "0"));
  }
  const int64_t begin = kBatch * env.rank / env.world_size;
  const int64_t end = kBatch * (env.rank + 1) / env.world_size;
  const int64_t accum = std::stoll(setting("accum", "1"));
  std::unique_ptr<lowbit::dist::OverlappedAverage> overlapped;
  if (setting("overlap", "0") == "1")
    overlapped = std::make_unique<lowbit::dist::OverlappedAverage>(group, model->parameters());
  torch::Generator data = at::detail::createCPUGenerator(1234);
  for (int step = 0; step < steps; ++step) {
    const auto x = torch::randn({kBatch, kIn}, data).to(device);
    const auto y = torch::randint(kClasses, {kBatch}, data).to(device);
    if (step < first) continue;  // resumed: this batch was trained on before the checkpoint
    if (zero)
      zero->zero_grad();
    else
      opt->zero_grad();
    // The mean loss over the rank's rows, as A micro-batches' sums over their rows.
    for (int64_t a = 0; a < accum; ++a) {
      const int64_t lo = begin + (end - begin) * a / accum;
      const int64_t hi = begin + (end - begin) * (a + 1) / accum;
      if (overlapped && a + 1 == accum) overlapped->arm();
      if (lo == hi) continue;
      const auto loss = torch::nn::functional::cross_entropy(
          model->forward(x.slice(0, lo, hi)), y.slice(0, lo, hi),
          torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
      (loss / double(end - begin)).backward();
    }
    if (overlapped)
      overlapped->finish();
    else
      lowbit::dist::average_gradients(group, model->parameters());
    if (mode == "grads") {
      std::vector<torch::Tensor> grads;
      for (const auto& p : model->parameters()) grads.push_back(p.grad());
      torch::save(on_cpu(grads), out + "." + std::to_string(env.rank));
      return 0;
    }
    if (zero)
      zero->step();
    else
      opt->step();
  }
  if (setting("save", "0") == "1") {
    if (env.rank == 0) torch::save(on_cpu(model->parameters()), out + ".params");
    if (settings.count("fsize")) {
      // Files may grow to `fsize` bytes: a longer write fails (EFBIG) as on a full disk.
      std::signal(SIGXFSZ, SIG_IGN);
      const rlim_t limit = std::stoul(settings["fsize"]);
      const rlimit fsize{limit, limit};
      setrlimit(RLIMIT_FSIZE, &fsize);
    }
    save_optimizer(out + ".ckpt");
  }
  torch::save(on_cpu(model->parameters()), out + "." + std::to_string(env.rank));
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
