// Metrics JSONL: records flushed as written, a resume drops what the
// interrupted run wrote past its checkpoint, a torn last line is skipped; the
// SVG plot is well-formed and maps the data onto its axes.
#include <fstream>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "examples/train/metrics_log.h"
#include "examples/train/svg_plot.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::train {
namespace {

using lowbit::testing::ScratchDir;

TEST(MetricsLog, ResumeDropsRecordsPastTheCheckpointAndTornLines) {
  ScratchDir dir;
  const std::string path = dir.file("sub/metrics.jsonl");
  {
    MetricsLog log(path, -1);
    for (int step = 1; step <= 6; ++step) log.write({{"type", "train"}, {"step", step}});
    log.write({{"type", "eval"}, {"step", 4}, {"loss", 1.5}});
  }
  EXPECT_EQ(read_metrics(path).size(), 7u);  // flushed without closing the run
  std::ofstream(path, std::ios::app) << "{\"type\": \"train\", \"st";  // killed mid-line
  EXPECT_EQ(read_metrics(path).size(), 7u);
  {
    MetricsLog log(path, 4);
    log.write({{"type", "train"}, {"step", 5}, {"resumed", true}});
  }
  const auto records = read_metrics(path);
  ASSERT_EQ(records.size(), 6u);  // steps 1-4, the eval of step 4, the new step 5
  EXPECT_EQ(records[4]["type"], "eval");
  EXPECT_TRUE(records[5]["resumed"].get<bool>());
  // A fresh run starts a new file.
  MetricsLog(path, -1).write({{"step", 1}});
  EXPECT_EQ(read_metrics(path).size(), 1u);
  // Damage anywhere but the last line is an error naming the line.
  dir.write("bad.jsonl", "{\"step\": 1}\nnot json\n{\"step\": 2}\n");
  try {
    read_metrics(dir.file("bad.jsonl"));
    ADD_FAILURE() << "a damaged line must be refused";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
}

TEST(SvgPlot, DrawsLossAccuracyAndLearningRateOnSharedAxes) {
  std::vector<nlohmann::json> records;
  for (int step = 1; step <= 100; ++step) {
    records.push_back(
        {{"type", "train"}, {"step", step}, {"loss", 2.0 - step / 100.0}, {"lr", 1e-3}});
  }
  records.push_back({{"type", "eval"}, {"step", 100}, {"loss", 1.1}, {"accuracy", 0.8}});
  const std::string svg = render_svg(records, "run <1>");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("run &lt;1&gt;"), std::string::npos);  // escaped title
  for (const char* label : {"Loss", "Evaluation accuracy", "Learning rate", "eval loss"}) {
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  }
  // Five series: train loss, its average, eval loss, accuracy, lr.
  const std::regex polyline("<polyline");
  EXPECT_EQ(
      std::distance(std::sregex_iterator(svg.begin(), svg.end(), polyline), std::sregex_iterator()),
      5);
  // The raw loss series runs from the left edge (x = 70 + 670/100 for step 1)
  // to the right edge (x = 740 for step 100) of the plot area.
  EXPECT_NE(svg.find("points='76.7,"), std::string::npos);
  EXPECT_NE(svg.find(" 740,"), std::string::npos);

  ScratchDir dir;
  {
    MetricsLog log(dir.file("m.jsonl"), -1);
    for (const auto& r : records) log.write(r);
  }
  write_plot(dir.file("m.jsonl"), dir.file("plots/m.svg"), "t");
  std::ifstream in(dir.file("plots/m.svg"));
  EXPECT_TRUE(in.good());
  dir.write("empty.jsonl", "");
  EXPECT_THROW(write_plot(dir.file("empty.jsonl"), dir.file("e.svg"), "t"), c10::Error);
}

}  // namespace
}  // namespace lowbit::train
