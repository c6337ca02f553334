// Learning-rate schedules: constant, linear or cosine decay (Loshchilov &
// Hutter, "SGDR", ICLR 2017, without restarts) after a linear warmup. The
// trainer multiplies each parameter group's recipe lr by factor(step).
#pragma once

#include <cstdint>
#include <string>

namespace lowbit::train {

class Schedule {
 public:
  // `kind`: constant | linear | cosine; decay ends at `min_lr_ratio` on the
  // last of `total_steps` steps.
  Schedule(std::string kind, int64_t warmup_steps, int64_t total_steps, double min_lr_ratio);

  // Steps count from 1. Warmup gives step s <= warmup the factor s/warmup, so
  // the first update is not wasted at lr 0; decay then runs from 1 just after
  // warmup to min_lr_ratio at total_steps.
  double factor(int64_t step) const;

 private:
  std::string kind_;
  int64_t warmup_, total_;
  double min_ratio_;
};

}  // namespace lowbit::train
