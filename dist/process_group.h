// Multi-process training over libtorch's c10d (issue 19): the process group a run gets from the
// environment torchrun sets, with the collectives lowbit needs and a timeout on each, so that a
// dead or missing peer ends a run with an error instead of a hang. Gloo carries CPU tensors;
// CUDA tensors go through NCCL where the build has it and each rank has a GPU of its own
// (issue 20), else through Gloo, which stages them in host memory.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace lowbit::dist {

// Where this process sits in a run: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR
// and MASTER_PORT, as torchrun (and `lowbit-train --nproc`) set them.
struct Env {
  int rank = 0;
  int world_size = 1;
  // This process among those of its machine (which GPU it takes). Without LOCAL_RANK and
  // LOCAL_WORLD_SIZE, every rank is taken to be on this machine: rank and world_size.
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// Reads Env from the environment. Without RANK and WORLD_SIZE the run is one process. A value
// that is not an integer in range, or only one of RANK and WORLD_SIZE (or of LOCAL_RANK and
// LOCAL_WORLD_SIZE), throws naming the variable.
Env env_from_environment();

// The text of an exception, without libtorch's backtrace.
std::string message_of(const std::exception& e);

// How a Group carries CUDA tensors.
struct GroupOptions {
  // This rank's CUDA device for NCCL, which then carries every CUDA tensor (all of them must
  // live there). Every rank needs a device of its own: NCCL refuses two ranks on one GPU. -1:
  // no NCCL; CUDA tensors go through Gloo, and ranks may share a GPU.
  int nccl_device = -1;
  // A group of one still opens its store and process groups, so that its collectives run
  // through Gloo and NCCL (tests on one GPU); otherwise they leave the tensors as they are.
  bool connect_alone = false;
};

// Whether this build can use NCCL (a libtorch with CUDA and NCCL, and nccl.h found).
bool nccl_available();

// A process group of Env::world_size processes. Every call is collective: all ranks make the
// same calls in the same order with tensors of the same shapes and dtypes.
class Group {
 public:
  // Rendezvous through a TCP store that rank 0 hosts at master_addr:master_port, then Gloo (and
  // NCCL, see GroupOptions). A group of one opens no store or port unless connect_alone: its
  // collectives leave the tensors as they are.
  // Throws if the peers do not all arrive within `timeout`; every collective after that throws
  // when it does not complete within `timeout` (a peer died or stopped calling). With NCCL, a
  // collective's wait only orders the current CUDA stream after it; NCCL's own watchdog ends
  // the process when one does not complete within `timeout`.
  Group(const Env& env, std::chrono::milliseconds timeout, const GroupOptions& options = {});
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Whether collectives go through process groups (false: a group of one without
  // connect_alone, whose collectives leave the tensors as they are).
  bool connected() const;

  // The tensors of one call must all be on the CPU or all on CUDA (on GroupOptions::nccl_device
  // with NCCL); another mix throws naming the devices.
  // In place: every tensor becomes the elementwise sum over the ranks. The result is the same
  // bits on every rank.
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);

  // A collective in flight: wait() returns when it is complete (throwing as the blocking form
  // would); every Pending must be waited for before the tensors are read or the Group goes.
  class Pending {
   public:
    Pending() = default;
    explicit Pending(std::function<void()> wait) : wait_(std::move(wait)) {}
    void wait() {
      auto w = std::move(wait_);
      wait_ = nullptr;
      if (w) w();
    }

   private:
    std::function<void()> wait_;
  };
  // all_reduce_sum started and not waited for, so that the caller computes meanwhile (gradient
  // buckets during backward). Ranks must start their collectives in the same order.
  Pending all_reduce_sum_async(std::vector<torch::Tensor> tensors);
  // In place: every rank's `tensor` becomes rank `root`'s.
  void broadcast(torch::Tensor& tensor, int root);
  // Waits until every rank has arrived.
  void barrier();

  // Point to point, not collective: `tensor` (contiguous, on the CPU) goes to rank `peer`,
  // which receives it into a tensor of the same size and dtype. Messages between two ranks
  // arrive in the order they are sent. Both throw, like the collectives, after the timeout.
  void send(const torch::Tensor& tensor, int peer);
  void recv(torch::Tensor& tensor, int peer);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
};

}  // namespace lowbit::dist
