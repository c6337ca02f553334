// Starting a program from a test with its stdout and stderr appended to a log file.
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

extern char** environ;

namespace lowbit::testing {

// Starts `command` (the program's path first) with this process's environment plus `env`
// ("NAME=VALUE", taking precedence), stdout and stderr appended to `log`. Returns its pid.
inline pid_t spawn_logged(std::vector<std::string> command, const std::string& log,
                          const std::vector<std::string>& env = {}) {
  std::vector<char*> argv;
  for (std::string& a : command) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_text = env;
  for (char** e = environ; *e; ++e) env_text.push_back(*e);
  std::vector<char*> envp;
  for (std::string& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&files, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, argv[0], &files, nullptr, argv.data(), envp.data()), 0)
      << "starting " << command.front();
  posix_spawn_file_actions_destroy(&files);
  return pid;
}

}  // namespace lowbit::testing
