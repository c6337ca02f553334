#include "examples/train/metrics_log.h"

#include <filesystem>
#include <fstream>

#include <c10/util/Exception.h>

#include "quant/atomic_file.h"

namespace lowbit::train {

MetricsLog::MetricsLog(const std::string& path, int64_t resume_step) : path_(path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  if (resume_step >= 0 && std::filesystem::exists(path)) {
    std::string kept;
    for (const nlohmann::json& record : read_metrics(path)) {
      if (record.value("step", int64_t(0)) <= resume_step) kept += record.dump() + "\n";
    }
    quant::write_file_atomically(path, kept);
    out_.open(path, std::ios::app);
  } else {
    out_.open(path, std::ios::trunc);
  }
  TORCH_CHECK(out_, "cannot open the metrics file '", path, "' for writing");
}

void MetricsLog::write(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
  TORCH_CHECK(out_, "writing the metrics file '", path_, "' failed");
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::ifstream in(path);
  TORCH_CHECK(in, "cannot open the metrics file '", path, "'");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  std::vector<nlohmann::json> records;
  for (size_t i = 0; i < lines.size(); ++i) {
    nlohmann::json record = nlohmann::json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) {
      TORCH_CHECK(i + 1 == lines.size(), path, ": line ", i + 1, " is not a JSON object");
      break;
    }
    records.push_back(std::move(record));
  }
  return records;
}

}  // namespace lowbit::train
