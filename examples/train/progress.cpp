#include "examples/train/progress.h"

#include <cmath>
#include <cstdio>

#include <c10/util/Exception.h>

namespace lowbit::train {

Progress::Mode Progress::resolve(const std::string& setting, bool terminal) {
  if (setting == "auto") return terminal ? Mode::Bar : Mode::Lines;
  if (setting == "bar") return Mode::Bar;
  if (setting == "lines") return Mode::Lines;
  TORCH_CHECK(setting == "none", "log.progress '", setting, "' is unknown");
  return Mode::None;
}

Progress::Progress(Mode mode, int64_t first_step, int64_t total_steps, int64_t every,
                   std::ostream& out)
    : mode_(mode),
      first_(first_step),
      total_(total_steps),
      every_(every),
      out_(out),
      start_(std::chrono::steady_clock::now()) {}

std::string format_duration(double seconds) {
  const int64_t s = int64_t(std::llround(std::max(0.0, seconds)));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600),
                  (long long)(s / 60 % 60), (long long)(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  }
  return buf;
}

std::string Progress::status(int64_t step, double loss, double lr) const {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  // The ETA counts evaluations and checkpoints too: wall time per step so far.
  const double eta = steps_ > 0 ? elapsed / double(steps_) * double(total_ - step) : 0.0;
  char buf[160];
  std::snprintf(buf, sizeof buf, "loss %.4f  lr %.2e  %.1f ms/step  ETA %s", loss, lr,
                1e3 * step_seconds_sum_ / double(std::max<int64_t>(1, steps_)),
                format_duration(eta).c_str());
  return buf;
}

void Progress::clear_bar() {
  if (bar_shown_) out_ << "\r\033[K";
  bar_shown_ = false;
}

void Progress::step(int64_t step, double loss, double lr, double step_seconds) {
  ++steps_;
  step_seconds_sum_ += step_seconds;
  loss_sum_ += loss;
  ++loss_count_;
  if (mode_ == Mode::None) return;
  const bool last = step == total_;
  if (mode_ == Mode::Lines) {
    if ((step - first_) % every_ != 0 && !last) return;
    out_ << "step " << step << "/" << total_ << "  "
         << status(step, loss_sum_ / double(loss_count_), lr) << "\n";
    out_.flush();
    loss_sum_ = 0.0;
    loss_count_ = 0;
    return;
  }
  // A terminal redraws at most ten times a second.
  const auto now = std::chrono::steady_clock::now();
  if (!last && bar_shown_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  constexpr int kCells = 24;
  const int filled = int(double(kCells) * double(step) / double(total_));
  clear_bar();
  out_ << "[" << std::string(size_t(filled), '#') << std::string(size_t(kCells - filled), '.')
       << "] " << step << "/" << total_ << "  " << status(step, loss, lr);
  // The finished bar stays on screen; messages go below it.
  if (last) {
    out_ << "\n";
  } else {
    bar_shown_ = true;
  }
  out_.flush();
}

void Progress::message(const std::string& line) {
  if (mode_ == Mode::None) return;
  clear_bar();
  out_ << line << "\n";
  out_.flush();
}

void Progress::finish() {
  if (bar_shown_) out_ << "\n";
  bar_shown_ = false;
  out_.flush();
}

}  // namespace lowbit::train
