// Plots a run's metrics (metrics_log.h records) as a self-contained SVG:
// training loss per step with its moving average and the evaluation loss,
// evaluation accuracy when the task has one, and the learning rate, each
// against the optimizer step. Written by the trainer at the end of a run and
// by `lowbit-train --plot <metrics.jsonl> [out.svg]`.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowbit::train {

std::string render_svg(const std::vector<nlohmann::json>& records, const std::string& title);

// Reads `metrics_path`, renders it and replaces `svg_path` atomically.
void write_plot(const std::string& metrics_path, const std::string& svg_path,
                const std::string& title);

}  // namespace lowbit::train
