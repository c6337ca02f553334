// Training progress for people: on a terminal a bar redrawn in place (step,
// loss, lr, time per step, ETA); elsewhere (logs, CI) a plain line every N
// steps with the loss averaged since the previous line. Messages (evaluations,
// checkpoints) print as whole lines in both modes.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace lowbit::train {

class Progress {
 public:
  enum class Mode { Bar, Lines, None };

  // "auto" -> Bar when `terminal`, else Lines; "bar", "lines", "none".
  static Mode resolve(const std::string& setting, bool terminal);

  // Steps first_step+1 .. total_steps are to come.
  Progress(Mode mode, int64_t first_step, int64_t total_steps, int64_t every, std::ostream& out);

  void step(int64_t step, double loss, double lr, double step_seconds);
  void message(const std::string& line);
  // Ends the bar's line.
  void finish();

 private:
  std::string status(int64_t step, double loss, double lr) const;
  void clear_bar();

  Mode mode_;
  int64_t first_, total_, every_;
  std::ostream& out_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  double step_seconds_sum_ = 0.0, loss_sum_ = 0.0;
  int64_t steps_ = 0, loss_count_ = 0;
  bool bar_shown_ = false;
};

// "1:02:03", "4:05" for a duration in seconds.
std::string format_duration(double seconds);

}  // namespace lowbit::train
