#include "dist/process_group.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#ifdef LOWBIT_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

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
  const auto local_world = integer_variable("LOCAL_WORLD_SIZE", 1, env.world_size);
  const auto local_rank =
      integer_variable("LOCAL_RANK", 0, local_world ? *local_world - 1 : env.world_size - 1);
  LOWBIT_CHECK(local_world.has_value() == local_rank.has_value(),
               "environment: LOCAL_RANK and LOCAL_WORLD_SIZE must be set together (only ",
               local_world ? "LOCAL_WORLD_SIZE" : "LOCAL_RANK", " is set)");
  env.local_world_size = local_world ? int(*local_world) : env.world_size;
  env.local_rank = local_rank ? int(*local_rank) : env.rank;
  if (const char* addr = std::getenv("MASTER_ADDR")) {
    LOWBIT_CHECK(*addr, "environment variable MASTER_ADDR is empty");
    env.master_addr = addr;
  }
  if (const auto port = integer_variable("MASTER_PORT", 1, 65535)) env.master_port = int(*port);
  return env;
}

bool nccl_available() {
#ifdef LOWBIT_WITH_NCCL
  return true;
#else
  return false;
#endif
}

struct Group::Impl {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#ifdef LOWBIT_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  int nccl_device = -1;
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

  // Starts `collective` (a callable taking a process group) on the group that carries
  // `tensors`: NCCL for CUDA tensors where the group has it, Gloo otherwise.
  template <typename Collective>
  c10::intrusive_ptr<c10d::Work> start_on(const char* what,
                                          const std::vector<torch::Tensor>& tensors,
                                          Collective&& collective) {
    LOWBIT_CHECK(!tensors.empty(), "dist: ", what, " of no tensors");
    const torch::Device device = tensors[0].device();
    for (const auto& t : tensors)
      LOWBIT_CHECK(t.device() == device && (device.is_cpu() || device.is_cuda()), "dist: ",
                   what, " on ", where, ": its tensors must all be on the CPU or all on one "
                   "CUDA device; they are on ", device.str(), " and ", t.device().str());
#ifdef LOWBIT_WITH_NCCL
    if (device.is_cuda() && nccl) {
      LOWBIT_CHECK(device.index() == nccl_device, "dist: ", what, " on ", where,
                   ": a CUDA tensor on ", device.str(), ", but this rank's NCCL device is cuda:",
                   nccl_device);
      return collective(*nccl);
    }
#endif
    return collective(*gloo);
  }
};

Group::Group(const Env& env, std::chrono::milliseconds timeout, const GroupOptions& options)
    : impl_(std::make_unique<Impl>()), rank_(env.rank), size_(env.world_size) {
  LOWBIT_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size,
               "dist: rank ", env.rank, " is outside [0, ", env.world_size, ")");
  LOWBIT_CHECK(options.nccl_device < 0 || nccl_available(), "dist: NCCL was asked for (cuda:",
               options.nccl_device, "), but this build of lowbit has none (it needs a libtorch ",
               "with CUDA and NCCL, and nccl.h: LOWBIT_NCCL_INCLUDE_DIR)");
  impl_->timeout = timeout;
  impl_->where = "rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                 " (store " + env.master_addr + ":" + std::to_string(env.master_port) + ")";
  // Alone: every collective is the identity, no store, no port.
  if (env.world_size == 1 && !options.connect_alone) return;
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = std::uint16_t(env.master_port);
    store_options.isServer = env.rank == 0;
    store_options.numWorkers = std::size_t(env.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    // The classic store server, torch's default before 2.4: since 2.4 the default is the libuv
    // one, which libtorch builds without libuv (Debian 13's 2.6) refuse ("use_libuv was
    // requested but PyTorch was build without libuv support"); libuv pays off for thousands of
    // ranks, not for one host's few.
    store_options.useLibUV = false;
#endif
    auto store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
    // Each process group keeps its keys under its own prefix of the one store.
    auto gloo_options = c10d::ProcessGroupGloo::Options::create();
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    gloo_options->timeout = timeout;
    impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", store), env.rank, env.world_size,
        gloo_options);
#ifdef LOWBIT_WITH_NCCL
    if (options.nccl_device >= 0) {
      // NCCL's communicator and streams go on this device, not on device 0.
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(options.nccl_device));
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout;
      impl_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl", store), env.rank, env.world_size,
          nccl_options);
      impl_->nccl_device = options.nccl_device;
    }
#endif
  } catch (const std::exception& e) {
    throw std::runtime_error("lowbit::dist: could not start " + impl_->where + " within " +
                             std::to_string(timeout.count()) + " ms: " + message_of(e));
  }
}

bool Group::connected() const { return bool(impl_->gloo); }

Group::~Group() = default;

// The sum lands in the tensors' own memory: the copied vector holds the same tensors.
void Group::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  all_reduce_sum_async(tensors).wait();
}

Group::Pending Group::all_reduce_sum_async(std::vector<torch::Tensor> tensors) {
  if (!impl_->gloo) return {};
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::SUM;
  options.timeout = impl_->timeout;
  const auto all_reduce = [&](auto& pg) { return pg.allreduce(tensors, options); };
  auto work = impl_->start_on("all-reduce", tensors, all_reduce);
  return Pending([impl = impl_.get(), work] { impl->run("all-reduce", work); });
}

void Group::broadcast(torch::Tensor& tensor, int root) {
  LOWBIT_CHECK(root >= 0 && root < size_, "dist: broadcast root ", root,
               " is outside [0, ", size_, ")");
  if (!impl_->gloo) return;
  std::vector<torch::Tensor> tensors{tensor};
  c10d::BroadcastOptions options;
  options.rootRank = root;
  options.timeout = impl_->timeout;
  const auto from_root = [&](auto& pg) { return pg.broadcast(tensors, options); };
  impl_->run("broadcast", impl_->start_on("broadcast", tensors, from_root));
}

void Group::barrier() {
  if (!impl_->gloo) return;
  c10d::BarrierOptions options;
  options.timeout = impl_->timeout;
  impl_->run("barrier", impl_->gloo->barrier(options));
}

void Group::send(const torch::Tensor& tensor, int peer) {
  LOWBIT_CHECK(peer >= 0 && peer < size_ && peer != rank_, "dist: send to rank ", peer,
               " from rank ", rank_, " of ", size_);
  LOWBIT_CHECK(tensor.is_contiguous() && tensor.device().is_cpu(),
               "dist: send needs a contiguous CPU tensor; this one is on ", tensor.device().str());
  std::vector<torch::Tensor> tensors{tensor};
  impl_->run("send", impl_->gloo->send(tensors, peer, /*tag=*/0));
}

void Group::recv(torch::Tensor& tensor, int peer) {
  LOWBIT_CHECK(peer >= 0 && peer < size_ && peer != rank_, "dist: receive from rank ", peer,
               " on rank ", rank_, " of ", size_);
  LOWBIT_CHECK(tensor.is_contiguous() && tensor.device().is_cpu(),
               "dist: recv needs a contiguous CPU tensor; this one is on ", tensor.device().str());
  std::vector<torch::Tensor> tensors{tensor};
  impl_->run("receive", impl_->gloo->recv(tensors, peer, /*tag=*/0));
}

}  // namespace lowbit::dist
