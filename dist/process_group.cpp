#include "dist/process_group.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cerrno>
#include <cstdlib>
#include <optional>
#include <stdexcept>

#include "kernels/error.h"

namespace lowbit::dist {
namespace {

// The variable's value as an integer in [lo, hi]; nullopt when it is unset.
std::optional<long> integer_variable(const char* name, long lo, long hi) {
  const char* text = std::getenv(name);
  if (!text) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  LOWBIT_CHECK(*text && end && *end == '\0' && errno == 0 && v >= lo && v <= hi,
               "environment variable ", name, "='", text, "' is not an integer in [", lo, ", ",
               hi, "]");
  return v;
}

}  // namespace

std::string message_of(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
  return e.what();
}

Env env_from_environment() {
  Env env;
  const auto world = integer_variable("WORLD_SIZE", 1, 1 << 20);
  const auto rank = integer_variable("RANK", 0, world ? *world - 1 : 0);
  LOWBIT_CHECK(world.has_value() == rank.has_value(),
               "environment: RANK and WORLD_SIZE must be set together (only ",
               world ? "WORLD_SIZE" : "RANK", " is set)");
  if (world) {
    env.world_size = int(*world);
    env.rank = int(*rank);
  }
  if (const char* addr = std::getenv("MASTER_ADDR")) {
    LOWBIT_CHECK(*addr, "environment variable MASTER_ADDR is empty");
    env.master_addr = addr;
  }
  if (const auto port = integer_variable("MASTER_PORT", 1, 65535)) env.master_port = int(*port);
  return env;
}

struct Group::Impl {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::chrono::milliseconds timeout;
  std::string where;  // for errors: "rank r of n (store host:port)"

  void run(const char* what, const c10::intrusive_ptr<c10d::Work>& work) {
    try {
      work->wait(timeout);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("lowbit::dist: ") + what + " failed on " + where +
                               " (a peer died, stopped calling, or timed out after " +
                               std::to_string(timeout.count()) + " ms): " + message_of(e));
    }
  }
};

Group::Group(const Env& env, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()), rank_(env.rank), size_(env.world_size) {
  LOWBIT_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size,
               "dist: rank ", env.rank, " is outside [0, ", env.world_size, ")");
  impl_->timeout = timeout;
  impl_->where = "rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                 " (store " + env.master_addr + ":" + std::to_string(env.master_port) + ")";
  if (env.world_size == 1) return;  // alone: every collective is the identity, no store, no port
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = std::uint16_t(env.master_port);
    store_options.isServer = env.rank == 0;
    store_options.numWorkers = std::size_t(env.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
    auto options = c10d::ProcessGroupGloo::Options::create();
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    options->timeout = timeout;
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank, env.world_size,
                                                            options);
  } catch (const std::exception& e) {
    throw std::runtime_error("lowbit::dist: could not start " + impl_->where + " within " +
                             std::to_string(timeout.count()) + " ms: " + message_of(e));
  }
}

Group::~Group() = default;

void Group::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  if (!impl_->pg) return;
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::SUM;
  options.timeout = impl_->timeout;
  impl_->run("all-reduce", impl_->pg->allreduce(tensors, options));
}

void Group::broadcast(torch::Tensor& tensor, int root) {
  LOWBIT_CHECK(root >= 0 && root < size_, "dist: broadcast root ", root,
               " is outside [0, ", size_, ")");
  if (!impl_->pg) return;
  std::vector<torch::Tensor> tensors{tensor};
  c10d::BroadcastOptions options;
  options.rootRank = root;
  options.timeout = impl_->timeout;
  impl_->run("broadcast", impl_->pg->broadcast(tensors, options));
}

void Group::barrier() {
  if (!impl_->pg) return;
  c10d::BarrierOptions options;
  options.timeout = impl_->timeout;
  impl_->run("barrier", impl_->pg->barrier(options));
}

void Group::send(const torch::Tensor& tensor, int peer) {
  LOWBIT_CHECK(peer >= 0 && peer < size_ && peer != rank_, "dist: send to rank ", peer,
               " from rank ", rank_, " of ", size_);
  LOWBIT_CHECK(tensor.is_contiguous(), "dist: send needs a contiguous tensor");
  std::vector<torch::Tensor> tensors{tensor};
  impl_->run("send", impl_->pg->send(tensors, peer, /*tag=*/0));
}

void Group::recv(torch::Tensor& tensor, int peer) {
  LOWBIT_CHECK(peer >= 0 && peer < size_ && peer != rank_, "dist: receive from rank ", peer,
               " on rank ", rank_, " of ", size_);
  LOWBIT_CHECK(tensor.is_contiguous(), "dist: recv needs a contiguous tensor");
  std::vector<torch::Tensor> tensors{tensor};
  impl_->run("receive", impl_->pg->recv(tensors, peer, /*tag=*/0));
}

}  // namespace lowbit::dist
