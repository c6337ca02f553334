#include "tests/dist/workers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace lowbit::dist::testing {
namespace {

namespace fs = std::filesystem;

// A TCP port that was free a moment ago (the store's server binds it next).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  close(fd);
  if (!ok) throw std::runtime_error("no free TCP port");
  return ntohs(addr.sin_port);
}

}  // namespace

std::vector<Exit> run_workers(int world, const std::vector<std::string>& args,
                              std::chrono::seconds limit) {
  const std::string port = std::to_string(free_port());
  const int n = std::max(world, 1);
  std::vector<pid_t> pids(n);
  std::vector<std::string> err_files(n);
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < n; ++r) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) {
      const std::string kv = *e;
      if (kv.rfind("RANK=", 0) && kv.rfind("WORLD_SIZE=", 0) && kv.rfind("MASTER_", 0))
        env_strings.push_back(kv);
    }
    if (world > 0) {
      env_strings.push_back("RANK=" + std::to_string(r));
      env_strings.push_back("WORLD_SIZE=" + std::to_string(world));
      env_strings.push_back("MASTER_ADDR=127.0.0.1");
      env_strings.push_back("MASTER_PORT=" + port);
    }
    env_strings.push_back("OMP_NUM_THREADS=1");
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_strings{LOWBIT_DIST_WORKER};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    err_files[r] = (fs::temp_directory_path() / ("lowbit_dist_err_" + std::to_string(getpid()) +
                                                 "_" + std::to_string(r)))
                       .string();
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, err_files[r].c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (posix_spawn(&pids[r], argv[0], &actions, nullptr, argv.data(), envp.data()) != 0)
      throw std::runtime_error("cannot start " + argv_strings[0]);
    posix_spawn_file_actions_destroy(&actions);
  }
  std::vector<Exit> exits(n);
  std::vector<bool> done(n, false);
  for (int left = n; left > 0;) {
    for (int r = 0; r < n; ++r) {
      if (done[r]) continue;
      int status = 0;
      if (waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        done[r] = true;
        --left;
        exits[r].status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        exits[r].seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
    }
    if (std::chrono::steady_clock::now() - start > limit) {
      for (int r = 0; r < n; ++r)
        if (!done[r]) kill(pids[r], SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int r = 0; r < n; ++r) {
    std::ifstream f(err_files[r]);
    std::stringstream ss;
    ss << f.rdbuf();
    exits[r].err = ss.str();
    fs::remove(err_files[r]);
  }
  return exits;
}

std::vector<torch::Tensor> load(const std::string& path) {
  std::vector<torch::Tensor> v;
  torch::load(v, path);
  fs::remove(path);
  return v;
}

int64_t load_bytes(const std::string& path) {
  int64_t v = -1;
  std::ifstream(path + ".bytes") >> v;
  fs::remove(path + ".bytes");
  return v;
}

std::string out_path(const std::string& name) {
  return (fs::temp_directory_path() / (name + "_" + std::to_string(getpid()))).string();
}

void expect_clean(const std::vector<Exit>& exits) {
  for (size_t r = 0; r < exits.size(); ++r)
    ASSERT_EQ(exits[r].status, 0) << "rank " << r << ": " << exits[r].err;
}

void expect_same_bits(const std::string& a, const std::string& b, const std::string& what) {
  for (int r = 0; r < 2; ++r) {
    const std::string suffix = "." + std::to_string(r);
    const auto want = load(a + suffix), got = load(b + suffix);
    load_bytes(a + suffix);
    load_bytes(b + suffix);
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t k = 0; k < want.size(); ++k)
      EXPECT_TRUE(torch::equal(got[k], want[k])) << what << " rank " << r << " parameter " << k;
  }
}

std::vector<double> drift_from_one_process(const std::string& two, const std::string& one,
                                           std::vector<torch::Tensor>* two_params,
                                           const std::vector<std::string>& extra) {
  const std::string path1 = out_path("one_" + one), path2 = out_path("two_" + two);
  const auto args = [&](const std::string& path, const std::string& optimizer) {
    std::vector<std::string> all{path, optimizer, "20"};
    all.insert(all.end(), extra.begin(), extra.end());
    return all;
  };
  expect_clean(run_workers(0, args(path1, one)));
  expect_clean(run_workers(2, args(path2, two)));
  const auto p1 = load(path1 + ".0"), p2a = load(path2 + ".0"), p2b = load(path2 + ".1");
  for (const auto& f : {path1 + ".0", path2 + ".0", path2 + ".1"}) load_bytes(f);
  EXPECT_EQ(p1.size(), p2a.size());
  const double lr = 1e-2;  // the worker's
  std::vector<double> drifts;
  for (size_t k = 0; k < p1.size() && k < p2a.size(); ++k) {
    EXPECT_TRUE(torch::equal(p2a[k], p2b[k])) << two << " parameter " << k;
    drifts.push_back((p2a[k] - p1[k]).abs().mean().item<double>() / lr);
    std::cout << two << " parameter " << k << ": mean |2 ranks - 1 process| = " << drifts.back()
              << " lr\n";
  }
  if (two_params) *two_params = p2a;
  return drifts;
}

}  // namespace lowbit::dist::testing
