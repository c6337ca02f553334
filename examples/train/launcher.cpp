#include "examples/train/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace lowbit::train {
namespace {

volatile sig_atomic_t forwarded_signal = 0;

void remember_signal(int signal) { forwarded_signal = signal; }

// A TCP port the kernel reports free on 127.0.0.1 now. Another program may take it before rank
// 0's store binds it; that run then fails at start-up with the store's error.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("--nproc: socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  const int error = errno;
  ::close(fd);
  if (!ok)
    throw std::runtime_error(std::string("--nproc: no free port on 127.0.0.1: ") +
                             std::strerror(error));
  return ntohs(address.sin_port);
}

std::string own_executable() {
  std::string path(4096, '\0');
  const ssize_t n = ::readlink("/proc/self/exe", path.data(), path.size() - 1);
  if (n <= 0) throw std::runtime_error("--nproc: cannot find this program (/proc/self/exe)");
  path.resize(size_t(n));
  return path;
}

std::string describe_status(int status) {
  std::ostringstream os;
  if (WIFEXITED(status)) {
    os << "exited with status " << WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    os << "was killed by signal " << WTERMSIG(status) << " (" << ::strsignal(WTERMSIG(status))
       << ")";
  } else {
    os << "ended with wait status " << status;
  }
  return os.str();
}

// One write of the whole line: the ranks print on the same stderr, and a line written in
// pieces could be cut by one of theirs.
void say(std::ostream& err, const std::string& line) { err << (line + "\n") << std::flush; }

// Exit status 0, or 130: a rank that stopped on Ctrl-C after its checkpoint.
bool succeeded(int status) {
  return WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 130);
}

struct Rank {
  pid_t pid = -1;
  bool running = false;
  int status = 0;
};

}  // namespace

int launch_local_ranks(int nproc, const std::vector<std::string>& args, std::ostream& err) {
  const std::string exe = own_executable();
  const int port = free_port();
  const std::string who = "lowbit-train --nproc " + std::to_string(nproc);

  // Everything the children need is built before fork: after it they only call
  // async-signal-safe functions.
  std::vector<std::string> base_env;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    bool ours = false;
    for (const char* name : {"RANK=", "WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT=",
                             "LOCAL_RANK=", "LOCAL_WORLD_SIZE="})
      ours = ours || entry.rfind(name, 0) == 0;
    if (!ours) base_env.push_back(entry);
  }
  std::vector<std::vector<std::string>> envs(static_cast<size_t>(nproc), base_env);
  for (int r = 0; r < nproc; ++r) {
    auto& env = envs[size_t(r)];
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(nproc));
    env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(nproc));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back("MASTER_PORT=" + std::to_string(port));
  }
  std::vector<std::string> argv_text = {exe};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::vector<char*>> envps(static_cast<size_t>(nproc));
  for (int r = 0; r < nproc; ++r) {
    for (std::string& e : envs[size_t(r)]) envps[size_t(r)].push_back(e.data());
    envps[size_t(r)].push_back(nullptr);
  }

  // The ranks form a process group of their own, so that Ctrl-C on a terminal reaches them
  // once, forwarded from here (each saves a checkpoint and stops; a second signal would kill).
  struct sigaction forward {};
  forward.sa_handler = remember_signal;
  sigemptyset(&forward.sa_mask);
  struct sigaction old_int {}, old_term {};
  ::sigaction(SIGINT, &forward, &old_int);
  ::sigaction(SIGTERM, &forward, &old_term);

  const pid_t parent = ::getpid();
  std::vector<Rank> ranks(static_cast<size_t>(nproc));
  pid_t group = 0;
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      say(err, who + ": fork failed for rank " + std::to_string(r) + ": " + std::strerror(errno));
      if (group > 0) ::kill(-group, SIGKILL);
      for (const Rank& k : ranks)
        if (k.running) ::waitpid(k.pid, nullptr, 0);
      return 1;
    }
    if (pid == 0) {
      ::setpgid(0, group);
      // A rank must not outlive its launcher (killed with SIGKILL, say).
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);
      ::execve(exe.c_str(), argv.data(), envps[size_t(r)].data());
      ::_exit(127);
    }
    ::setpgid(pid, group);  // both sides, whichever runs first
    if (group == 0) group = pid;
    ranks[size_t(r)] = {pid, true, 0};
  }
  {
    std::ostringstream pids;
    for (int r = 0; r < nproc; ++r) pids << (r ? " " : "") << ranks[size_t(r)].pid;
    say(err, who + ": ranks 0-" + std::to_string(nproc - 1) + " on 127.0.0.1:" +
                 std::to_string(port) + " (pids " + pids.str() + ")");
  }

  using Clock = std::chrono::steady_clock;
  // After a failure: how long the others get to end on SIGTERM before SIGKILL.
  constexpr auto kGrace = std::chrono::seconds(10);
  int first_failure = -1;
  Clock::time_point kill_at{};
  int running = nproc;
  while (running > 0) {
    if (forwarded_signal != 0) {
      // To the ranks alone: a program a rank runs (the KJV's `bible` reader) is not to stop.
      for (const Rank& k : ranks)
        if (k.running) ::kill(k.pid, forwarded_signal);
      forwarded_signal = 0;
    }
    bool reaped = false;
    for (int r = 0; r < nproc; ++r) {
      Rank& k = ranks[size_t(r)];
      if (!k.running) continue;
      int status = 0;
      if (::waitpid(k.pid, &status, WNOHANG) != k.pid) continue;
      k.running = false;
      k.status = status;
      --running;
      reaped = true;
      if (first_failure < 0 && !succeeded(status)) {
        first_failure = r;
        say(err, who + ": rank " + std::to_string(r) + " (pid " + std::to_string(k.pid) + ") " +
                     describe_status(status) + "; stopping the other ranks");
        ::kill(-group, SIGTERM);
        ::kill(-group, SIGCONT);  // a stopped rank acts on SIGTERM only once continued
        kill_at = Clock::now() + kGrace;
      }
    }
    if (first_failure >= 0 && running > 0 && Clock::now() >= kill_at) {
      ::kill(-group, SIGKILL);
      kill_at = Clock::now() + kGrace;
    }
    if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);

  if (first_failure >= 0) {
    std::string line = who + ": failed: rank " + std::to_string(first_failure) + " " +
                       describe_status(ranks[size_t(first_failure)].status) + " first";
    for (int r = 0; r < nproc; ++r) {
      if (r != first_failure)
        line += "; rank " + std::to_string(r) + " " + describe_status(ranks[size_t(r)].status);
    }
    say(err, line);
    return 1;
  }
  for (const Rank& k : ranks)
    if (WEXITSTATUS(k.status) == 130) return 130;
  return 0;
}

}  // namespace lowbit::train
