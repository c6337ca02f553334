// A run's metrics as JSON Lines: one object per training step ("type":
// "train"), evaluation ("eval") and finished run ("summary"), each flushed as
// it is written. Resuming at step S first drops the records past S that the
// interrupted run left, so the file reads as one uninterrupted run.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowbit::train {

class MetricsLog {
 public:
  // resume_step < 0 starts a new file; otherwise records with "step" above
  // resume_step are dropped (the file is rewritten atomically) and new ones
  // appended. Creates the parent directory.
  MetricsLog(const std::string& path, int64_t resume_step);

  void write(const nlohmann::json& record);

 private:
  std::string path_;
  std::ofstream out_;
};

// The records of a metrics file. A last line cut short (a run killed while
// writing it) is skipped; any other line that is not JSON throws naming it.
std::vector<nlohmann::json> read_metrics(const std::string& path);

}  // namespace lowbit::train
