#include "examples/train/ranks.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include <torch/torch.h>

#include "examples/config/recipe.h"

#ifdef LOWBIT_WITH_DIST
#include "dist/data_parallel.h"
#include "dist/process_group.h"
#include "dist/zero.h"
#endif

namespace lowbit::train {

uint64_t fingerprint(const std::string& text) {
  // FNV-1a 64 (Fowler, Noll, Vo): offset basis and prime of the published parameters.
  uint64_t h = 0xcbf29ce484222325ull;
  for (const unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

#ifdef LOWBIT_WITH_DIST

namespace {

class Zero : public ShardedOptimizer {
 public:
  Zero(dist::Group& group, const std::vector<torch::Tensor>& params, const Ranks::Factory& make,
       int64_t block_size, int64_t min_8bit_size)
      // `make` by value: save() and load() build the whole optimizer with it long after this
      // constructor's caller has gone.
      : zero_(group, params,
              [make](std::vector<torch::Tensor> shards) {
                std::unique_ptr<torch::optim::Optimizer> built = make(std::move(shards));
                auto* eight_bit = dynamic_cast<optim::Optimizer8bit*>(built.get());
                if (!eight_bit)
                  throw config::RecipeError(
                      "distributed.zero: shards the states of lowbit's 8-bit optimizers "
                      "(optimizer.name adam8bit, adamw8bit, lion8bit, lamb8bit or "
                      "rmsprop8bit); set distributed.zero: false for this optimizer");
                built.release();
                return std::unique_ptr<optim::Optimizer8bit>(eight_bit);
              },
              block_size, min_8bit_size) {}

  void set_lr(double lr) override {
    if (zero_.owned_elements() == 0) return;  // more ranks than blocks: nothing to update here
    for (auto& group : zero_.local().param_groups()) group.options().set_lr(lr);
  }
  void step() override { zero_.step(); }
  int64_t state_bytes() const override { return zero_.state_bytes(); }
  int64_t skipped_steps() const override { return zero_.skipped_steps(); }
  void save(torch::serialize::OutputArchive& archive) const override { zero_.save(archive); }
  void load(torch::serialize::InputArchive& archive) override { zero_.load(archive); }

 private:
  dist::ZeroOptimizer zero_;
};

}  // namespace

struct Ranks::Impl {
  std::unique_ptr<dist::Group> group;
  std::unique_ptr<dist::OverlappedAverage> gradients;
};

std::unique_ptr<Ranks> Ranks::from_environment(std::chrono::seconds timeout, bool cuda) {
  const dist::Env env = dist::env_from_environment();
  if (env.world_size == 1) return nullptr;
  std::unique_ptr<Ranks> ranks(new Ranks());
  ranks->rank_ = env.rank;
  ranks->size_ = env.world_size;
  dist::GroupOptions options;
  ranks->collectives_ = "Gloo";
  if (cuda) {
    const int gpus = int(torch::cuda::device_count());
    if (gpus == 0)
      throw config::RecipeError("device: cuda, but this rank (" + std::to_string(env.rank) +
                                ") sees no CUDA device");
    ranks->cuda_device_ = env.local_rank % gpus;
    // NCCL refuses two ranks on one GPU; ranks that share GPUs go through Gloo.
    if (env.local_world_size <= gpus && dist::nccl_available()) {
      options.nccl_device = ranks->cuda_device_;
      ranks->collectives_ = "NCCL, one GPU per rank";
    } else {
      ranks->collectives_ =
          "Gloo through host memory: " +
          (dist::nccl_available()
               ? std::to_string(env.local_world_size) + " local ranks share " +
                     std::to_string(gpus) + " GPU(s), and NCCL needs one per rank"
               : std::string("this build has no NCCL"));
    }
  }
  ranks->impl_ = std::make_unique<Impl>();
  ranks->impl_->group = std::make_unique<dist::Group>(
      env, std::chrono::duration_cast<std::chrono::milliseconds>(timeout), options);
  return ranks;
}

Ranks::~Ranks() = default;

void Ranks::check_same(const std::string& what, uint64_t fingerprint, const std::string& advice) {
  dist::Group& group = *impl_->group;
  int64_t mine = 0;
  std::memcpy(&mine, &fingerprint, sizeof mine);
  torch::Tensor first = torch::tensor({mine}, torch::kInt64);
  group.broadcast(first, 0);
  // One slot per rank, 1 where that rank differs: after the sum every rank knows which.
  std::vector<torch::Tensor> differs{torch::zeros({size_}, torch::kInt64)};
  differs[0][rank_] = first.item<int64_t>() == mine ? 0 : 1;
  group.all_reduce_sum(differs);
  std::ostringstream list;
  int count = 0;
  for (int r = 0; r < size_; ++r) {
    if (differs[0][r].item<int64_t>() == 0) continue;
    list << (count++ ? ", " : "") << r;
  }
  if (count == 0) return;
  throw config::RecipeError("the ranks disagree on " + what + ": rank" + (count > 1 ? "s " : " ") +
                            list.str() + " differ" + (count > 1 ? "" : "s") + " from rank 0 (" +
                            std::to_string(size_) + " ranks); " + advice);
}

void Ranks::sum(std::vector<double>& values) {
  std::vector<torch::Tensor> t{torch::tensor(values, torch::kFloat64)};
  impl_->group->all_reduce_sum(t);
  for (size_t i = 0; i < values.size(); ++i) values[i] = t[0][int64_t(i)].item<double>();
}

void Ranks::broadcast_parameters(const std::vector<torch::Tensor>& params) {
  dist::broadcast_parameters(*impl_->group, params, 0);
}

void Ranks::sync_gradients_of(const std::vector<torch::Tensor>& params) {
  impl_->gradients = std::make_unique<dist::OverlappedAverage>(*impl_->group, params);
}

void Ranks::arm_gradients() { impl_->gradients->arm(); }

void Ranks::average_gradients() { impl_->gradients->finish(); }

std::unique_ptr<ShardedOptimizer> Ranks::shard_optimizer(const std::vector<torch::Tensor>& params,
                                                         const Factory& make, int64_t block_size,
                                                         int64_t min_8bit_size) {
  return std::make_unique<Zero>(*impl_->group, params, make, block_size, min_8bit_size);
}

#else  // a build without Gloo: one process only

struct Ranks::Impl {};

namespace {

int world_size_variable() {
  const char* world = std::getenv("WORLD_SIZE");
  return world && std::string(world) != "1" && std::string(world) != "" ? 2 : 1;
}

[[noreturn]] void no_gloo() {
  throw config::RecipeError(
      "WORLD_SIZE asks for several processes, and this build has no multi-process training "
      "(libtorch's Gloo headers were not found: install libgloo-dev and rebuild); unset "
      "WORLD_SIZE and RANK to train in one process");
}

}  // namespace

std::unique_ptr<Ranks> Ranks::from_environment(std::chrono::seconds, bool) {
  if (world_size_variable() > 1) no_gloo();
  return nullptr;
}

Ranks::~Ranks() = default;
void Ranks::check_same(const std::string&, uint64_t, const std::string&) {}
void Ranks::sum(std::vector<double>&) {}
void Ranks::broadcast_parameters(const std::vector<torch::Tensor>&) {}
void Ranks::sync_gradients_of(const std::vector<torch::Tensor>&) {}
void Ranks::arm_gradients() {}
void Ranks::average_gradients() {}
std::unique_ptr<ShardedOptimizer> Ranks::shard_optimizer(const std::vector<torch::Tensor>&,
                                                         const Factory&, int64_t, int64_t) {
  no_gloo();
}

#endif

}  // namespace lowbit::train
