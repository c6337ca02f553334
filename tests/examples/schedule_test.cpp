// Learning-rate schedules against their formulas evaluated here in double
// precision: linear warmup, then constant, linear or cosine (SGDR) decay to
// min_lr_ratio at the last step.
#include <cmath>

#include <gtest/gtest.h>

#include "examples/train/schedule.h"

namespace lowbit::train {
namespace {

TEST(Schedule, WarmsUpLinearlyFromTheFirstStep) {
  const Schedule s("cosine", 4, 20, 0.0);
  for (int step = 1; step <= 4; ++step) EXPECT_DOUBLE_EQ(s.factor(step), step / 4.0);
}

TEST(Schedule, CosineFollowsSgdrWithoutRestarts) {
  // eta_t = eta_min + (eta_max - eta_min) (1 + cos(pi T_cur / T)) / 2 with
  // T_cur = step - warmup - 1 and T = total - warmup - 1 (Loshchilov & Hutter,
  // eq. 5), as a share of the peak lr.
  const int warmup = 10, total = 110;
  const double min_ratio = 0.1;
  const Schedule s("cosine", warmup, total, min_ratio);
  for (int step = warmup + 1; step <= total; ++step) {
    const double t = double(step - warmup - 1) / double(total - warmup - 1);
    const double expected = min_ratio + (1 - min_ratio) * 0.5 * (1 + std::cos(M_PI * t));
    EXPECT_NEAR(s.factor(step), expected, 1e-15) << step;
  }
  EXPECT_DOUBLE_EQ(s.factor(warmup + 1), 1.0);
  EXPECT_DOUBLE_EQ(s.factor(total), min_ratio);
}

TEST(Schedule, LinearAndConstant) {
  const Schedule linear("linear", 0, 11, 0.0);
  for (int step = 1; step <= 11; ++step)
    EXPECT_NEAR(linear.factor(step), 1.0 - (step - 1) / 10.0, 1e-15);
  const Schedule constant("constant", 2, 5, 0.0);
  EXPECT_DOUBLE_EQ(constant.factor(1), 0.5);
  for (int step = 2; step <= 5; ++step) EXPECT_DOUBLE_EQ(constant.factor(step), 1.0);
  // A single step after warmup keeps the full lr instead of decaying to the floor at once.
  EXPECT_DOUBLE_EQ(Schedule("cosine", 0, 1, 0.0).factor(1), 1.0);
}

TEST(Schedule, RefusesBadArguments) {
  EXPECT_THROW(Schedule("step", 0, 10, 0.0), c10::Error);
  EXPECT_THROW(Schedule("cosine", 10, 10, 0.0), c10::Error);
  EXPECT_THROW(Schedule("cosine", 0, 10, 1.5), c10::Error);
  EXPECT_THROW(Schedule("cosine", 0, 10, 0.0).factor(11), c10::Error);
  EXPECT_THROW(Schedule("cosine", 0, 10, 0.0).factor(0), c10::Error);
}

}  // namespace
}  // namespace lowbit::train
