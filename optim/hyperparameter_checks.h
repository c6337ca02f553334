// Validation of the hyper-parameters the optimizers share, with messages in
// the words of libtorch's own checks (lr, eps, betas, weight_decay).
#pragma once

#include <cmath>

#include <c10/util/Exception.h>

namespace lowbit::optim {

inline void check_non_negative(const char* optimizer, const char* name, double v) {
  TORCH_CHECK(v >= 0 && std::isfinite(v), optimizer, ": invalid ", name, " value ", v,
              "; expected a finite value >= 0");
}

// A moving-average coefficient: [0, 1).
inline void check_beta(const char* optimizer, const char* name, double v) {
  TORCH_CHECK(v >= 0 && v < 1, optimizer, ": invalid ", name, " value ", v,
              "; expected a value in [0, 1)");
}

}  // namespace lowbit::optim
