// Peak memory of one setup measured in its own process: the benchmark re-runs
// its own binary with arguments that select the setup (a fresh process, so
// nothing another setup allocated counts) and reads back what it printed.
// The child reads its resident high-water mark (VmHWM) and can reset it
// (proc(5), clear_refs "5") to measure a phase alone.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace lowbit::bench {

// A "Field:" of /proc/self/status in KiB (VmHWM:, VmRSS:), or -1.
inline long long status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::stoll(line.substr(std::strlen(field)));
  return -1;
}

// Resets VmHWM to the current resident size; false where the kernel refuses.
inline bool reset_peak() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return bool(out);
}

// Runs this program (/proc/self/exe) as `name` with `args` and returns its
// standard output; empty when it could not start or did not exit with 0.
inline std::string run_self(const std::string& name, const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) return "";
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    std::vector<char*> argv = {const_cast<char*>(name.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? out : "";
}

}  // namespace lowbit::bench
