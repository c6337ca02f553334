#include "examples/train/schedule.h"

#include <cmath>

#include <c10/util/Exception.h>

namespace lowbit::train {

Schedule::Schedule(std::string kind, int64_t warmup_steps, int64_t total_steps, double min_lr_ratio)
    : kind_(std::move(kind)), warmup_(warmup_steps), total_(total_steps), min_ratio_(min_lr_ratio) {
  TORCH_CHECK(kind_ == "constant" || kind_ == "linear" || kind_ == "cosine", "schedule '", kind_,
              "' is unknown; expected constant, linear or cosine");
  TORCH_CHECK(total_ >= 1 && warmup_ >= 0 && warmup_ < total_, "schedule: warmup_steps (", warmup_,
              ") must be below the total steps (", total_, ")");
  TORCH_CHECK(min_ratio_ >= 0.0 && min_ratio_ <= 1.0, "schedule: min_lr_ratio ", min_ratio_,
              " must be in [0, 1]");
}

double Schedule::factor(int64_t step) const {
  TORCH_CHECK(step >= 1 && step <= total_, "schedule: step ", step, " outside [1, ", total_, "]");
  if (step <= warmup_) return double(step) / double(warmup_);
  if (kind_ == "constant") return 1.0;
  // Progress through the decay: 0 right after warmup, 1 at the last step (a
  // lone step after warmup keeps the full lr).
  const int64_t span = total_ - warmup_ - 1;
  const double p = span == 0 ? 0.0 : double(step - warmup_ - 1) / double(span);
  const double shape = kind_ == "linear" ? 1.0 - p : 0.5 * (1.0 + std::cos(M_PI * p));
  return min_ratio_ + (1.0 - min_ratio_) * shape;
}

}  // namespace lowbit::train
