// Runs a recipe through the trainer in this process, its printed output
// captured instead of shown.
#pragma once

#include <sstream>
#include <string>

#include "examples/config/recipe.h"
#include "examples/train/trainer.h"

namespace lowbit::testing {

inline train::RunResult run(const config::Recipe& recipe, std::string* output = nullptr) {
  std::ostringstream out;
  train::RunOptions options;
  options.out = &out;
  train::RunResult result = train::run_training(recipe, options);
  if (output) *output = out.str();
  return result;
}

}  // namespace lowbit::testing
