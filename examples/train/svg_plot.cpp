#include "examples/train/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <sstream>

#include <c10/util/Exception.h>

#include "examples/train/metrics_log.h"
#include "quant/atomic_file.h"

namespace lowbit::train {
namespace {

struct Series {
  std::string label, colour;
  std::vector<std::pair<double, double>> points;
  bool markers = false;
  double width = 1.5;
};

struct Panel {
  std::string title;
  std::vector<Series> series;
};

constexpr double kWidth = 760, kPanelHeight = 230, kLeft = 70, kRight = 20, kTop = 50, kGap = 40;

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else
      out += c;
  }
  return out;
}

std::string fmt(double v) {
  if (v == 0) v = 0;  // no "-0" label
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Tick step of 1, 2 or 5 times a power of ten giving about `count` ticks.
double nice_step(double span, int count) {
  const double raw = span / count;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / magnitude;
  return magnitude * (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10);
}

// Every second point of a long series: plots stay small and the shape the same.
std::vector<std::pair<double, double>> thin(std::vector<std::pair<double, double>> p, size_t max) {
  while (p.size() > max) {
    std::vector<std::pair<double, double>> half;
    for (size_t i = 0; i < p.size(); i += 2) half.push_back(p[i]);
    if (half.back() != p.back()) half.push_back(p.back());
    p.swap(half);
  }
  return p;
}

// All panels share the step axis [0, last step].
void draw_panel(std::ostringstream& svg, const Panel& panel, double top, double xmax) {
  const double x0 = kLeft, x1 = kWidth - kRight, y0 = top + kPanelHeight, y1 = top, xmin = 0;
  double ymin = std::numeric_limits<double>::infinity(), ymax = -ymin;
  for (const Series& s : panel.series) {
    for (const auto& [x, y] : s.points) ymin = std::min(ymin, y), ymax = std::max(ymax, y);
  }
  if (ymax <= ymin) ymax = ymin + (ymin == 0 ? 1 : std::abs(ymin) * 0.1);
  const double pad = (ymax - ymin) * 0.05;
  ymin -= pad, ymax += pad;
  auto px = [&](double x) { return x0 + (x - xmin) / (xmax - xmin) * (x1 - x0); };
  auto py = [&](double y) { return y0 - (y - ymin) / (ymax - ymin) * (y0 - y1); };

  svg << "<text x='" << x0 << "' y='" << y1 - 8 << "' font-size='14' font-weight='bold'>"
      << escape(panel.title) << "</text>\n";
  svg << "<rect x='" << x0 << "' y='" << y1 << "' width='" << x1 - x0 << "' height='" << y0 - y1
      << "' fill='none' stroke='#888'/>\n";
  const double ystep = nice_step(ymax - ymin, 5);
  for (double tick = std::ceil(ymin / ystep); tick * ystep <= ymax; ++tick) {
    // Ticks as integer multiples of the step: no accumulated rounding, and 0 is exact.
    const double t = tick * ystep, y = py(t);
    svg << "<line x1='" << x0 << "' x2='" << x1 << "' y1='" << y << "' y2='" << y
        << "' stroke='#eee'/><text x='" << x0 - 6 << "' y='" << y + 4
        << "' font-size='11' text-anchor='end'>" << fmt(t) << "</text>\n";
  }
  const double xstep = std::max(1.0, nice_step(xmax - xmin, 8));
  for (double t = xstep; t <= xmax; t += xstep) {
    svg << "<line x1='" << px(t) << "' x2='" << px(t) << "' y1='" << y1 << "' y2='" << y0
        << "' stroke='#eee'/><text x='" << px(t) << "' y='" << y0 + 15
        << "' font-size='11' text-anchor='middle'>" << fmt(t) << "</text>\n";
  }
  double legend_x = x1 - 10;
  for (auto s = panel.series.rbegin(); s != panel.series.rend(); ++s) {
    if (s->points.empty()) continue;
    svg << "<polyline fill='none' stroke='" << s->colour << "' stroke-width='" << s->width
        << "' points='";
    for (const auto& [x, y] : thin(s->points, 2000)) svg << px(x) << "," << py(y) << " ";
    svg << "'/>\n";
    if (s->markers) {
      for (const auto& [x, y] : s->points) {
        svg << "<circle cx='" << px(x) << "' cy='" << py(y) << "' r='2.5' fill='" << s->colour
            << "'/>\n";
      }
    }
    svg << "<text x='" << legend_x << "' y='" << y1 + 16 << "' font-size='12' text-anchor='end' "
        << "fill='" << s->colour << "'>" << escape(s->label) << "</text>\n";
    legend_x -= 8.0 * double(s->label.size()) + 20;
  }
}

}  // namespace

std::string render_svg(const std::vector<nlohmann::json>& records, const std::string& title) {
  Series train{"train loss", "#9ecae1", {}, false, 1.0};
  Series smooth{"train loss (moving average)", "#08519c", {}, false, 1.8};
  Series eval_loss{"eval loss", "#d94801", {}, true, 1.8};
  Series accuracy{"eval accuracy (%)", "#238b45", {}, true, 1.8};
  Series lr{"learning rate", "#6a51a3", {}, false, 1.5};
  double average = 0.0;
  for (const nlohmann::json& r : records) {
    const std::string type = r.value("type", "");
    const double step = r.value("step", 0.0);
    if (type == "train" && r.contains("loss")) {
      const double loss = r["loss"].get<double>();
      // An exponential moving average over about 20 steps.
      average = train.points.empty() ? loss : 0.95 * average + 0.05 * loss;
      train.points.emplace_back(step, loss);
      smooth.points.emplace_back(step, average);
      if (r.contains("lr")) lr.points.emplace_back(step, r["lr"].get<double>());
    } else if (type == "eval") {
      if (r.contains("loss")) eval_loss.points.emplace_back(step, r["loss"].get<double>());
      if (r.contains("accuracy")) {
        accuracy.points.emplace_back(step, 100.0 * r["accuracy"].get<double>());
      }
    }
  }
  double last_step = 1;
  for (const nlohmann::json& r : records) last_step = std::max(last_step, r.value("step", 0.0));
  std::vector<Panel> panels = {{"Loss", {train, smooth, eval_loss}}};
  if (!accuracy.points.empty()) panels.push_back({"Evaluation accuracy", {accuracy}});
  if (!lr.points.empty()) panels.push_back({"Learning rate", {lr}});

  const double height = kTop + double(panels.size()) * (kPanelHeight + kGap + 20);
  std::ostringstream svg;
  svg << "<?xml version='1.0' encoding='UTF-8'?>\n<svg xmlns='http://www.w3.org/2000/svg' "
      << "width='" << kWidth << "' height='" << height << "' font-family='sans-serif'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n<text x='" << kWidth / 2
      << "' y='24' font-size='16' text-anchor='middle'>" << escape(title) << "</text>\n";
  for (size_t i = 0; i < panels.size(); ++i) {
    draw_panel(svg, panels[i], kTop + double(i) * (kPanelHeight + kGap + 20) + 10, last_step);
  }
  svg << "<text x='" << kWidth / 2 << "' y='" << height - 6
      << "' font-size='12' text-anchor='middle'>optimizer step</text>\n</svg>\n";
  return svg.str();
}

void write_plot(const std::string& metrics_path, const std::string& svg_path,
                const std::string& title) {
  const std::vector<nlohmann::json> records = read_metrics(metrics_path);
  TORCH_CHECK(!records.empty(), metrics_path, ": holds no records to plot");
  const std::filesystem::path parent = std::filesystem::path(svg_path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  quant::write_file_atomically(svg_path, render_svg(records, title));
}

}  // namespace lowbit::train
