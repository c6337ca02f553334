// lowbit-fidelity-report: turns the runs scripts/fidelity.sh made into
// docs/RESULTS.md. Each run directory <root>/<study>/<variant>/seed<k>/ holds
// the metrics.jsonl lowbit-train wrote; its "summary" record gives the final
// evaluation and the cost (time per step, optimizer state, peak memory).
//
//   lowbit-fidelity-report <root> <out.md> <machine description>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "examples/error_text.h"
#include "examples/train/metrics_log.h"
#include "quant/atomic_file.h"

namespace {

namespace fs = std::filesystem;

struct Stat {
  std::vector<double> values;
  double mean() const {
    double s = 0;
    for (double v : values) s += v;
    return values.empty() ? NAN : s / double(values.size());
  }
  // Sample standard deviation (n - 1); NaN for a single run.
  double std() const {
    if (values.size() < 2) return NAN;
    const double m = mean();
    double s = 0;
    for (double v : values) s += (v - m) * (v - m);
    return std::sqrt(s / double(values.size() - 1));
  }
};

// The seeds of one variant of a study.
struct Variant {
  Stat accuracy, loss, step_ms, update_ms, state_kib, rss_mib, wall_s, load;
  int runs = 0;
};

std::optional<Variant> read_variant(const fs::path& dir) {
  if (!fs::is_directory(dir)) return std::nullopt;
  Variant v;
  std::vector<fs::path> seeds;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_directory() && e.path().filename().string().rfind("seed", 0) == 0) {
      seeds.push_back(e.path());
    }
  }
  std::sort(seeds.begin(), seeds.end());
  for (const fs::path& seed : seeds) {
    const fs::path metrics = seed / "metrics.jsonl";
    if (!fs::exists(metrics)) continue;
    for (const auto& r : lowbit::train::read_metrics(metrics.string())) {
      if (r.value("type", "") != "summary" || !r.contains("eval_loss")) continue;
      ++v.runs;
      if (r.contains("eval_accuracy"))
        v.accuracy.values.push_back(100.0 * r["eval_accuracy"].get<double>());
      v.loss.values.push_back(r["eval_loss"].get<double>());
      v.step_ms.values.push_back(1e3 * r["mean_step_cpu_s"].get<double>());
      v.update_ms.values.push_back(1e3 * r["mean_update_cpu_s"].get<double>());
      v.load.values.push_back(r["load_average"].get<double>());
      v.state_kib.values.push_back(r["optimizer_state_bytes"].get<double>() / 1024.0);
      v.rss_mib.values.push_back(r["peak_rss_mib"].get<double>());
      v.wall_s.values.push_back(r["wall_s"].get<double>());
    }
  }
  if (v.runs == 0) return std::nullopt;
  return v;
}

std::string fixed(double x, int digits) {
  if (std::isnan(x)) return "—";
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << x;
  return os.str();
}

std::string mean_std(const Stat& s, int digits) {
  const std::string sd = std::isnan(s.std()) ? "" : " ± " + fixed(s.std(), digits);
  return fixed(s.mean(), digits) + sd;
}

std::string signed_fixed(double x, int digits, const std::string& unit) {
  if (std::isnan(x)) return "—";
  return (x >= 0 ? "+" : "") + fixed(x, digits) + unit;
}

std::string cost_cells(const Variant& v) {
  return fixed(v.step_ms.mean(), 1) + " | " + fixed(v.update_ms.mean(), 2) + " | " +
         fixed(v.state_kib.mean(), 0) + " | " + fixed(v.rss_mib.mean(), 0) + " | " +
         fixed(v.load.mean(), 1);
}

const char* kCostHeader =
    "CPU ms/step | optimizer CPU ms/step | optimizer state KiB | peak RSS MiB | load";

void fashion_section(std::ostream& md, const fs::path& root) {
  md << "## Fashion-MNIST: test accuracy\n\n"
     << "Recipes `configs/fashion_mnist_<optimizer>.yaml` (MLP 784-256-10, 4 epochs, batch 128, "
        "cosine schedule), each in three modes: 8-bit states, the same optimizer with "
        "`optimizer.optim_bits=32`, and the torch::optim counterpart where libtorch has one. "
        "Mean ± sample standard deviation over seeds; Δ is the 8-bit accuracy minus the "
        "32-bit one. Target: |Δ| ≤ 0.3 percentage points.\n\n"
     << "| optimizer | mode | runs | test accuracy % | Δ vs 32-bit (pp) | target | test loss | "
     << kCostHeader << " |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const std::string opt : {"adam8bit", "adamw8bit", "lion8bit", "lamb8bit", "rmsprop8bit"}) {
    const auto eight = read_variant(root / "fashion" / opt / "8bit");
    const auto full = read_variant(root / "fashion" / opt / "32bit");
    const auto torch = read_variant(root / "fashion" / opt / "torch");
    for (const auto& [mode, v] :
         {std::pair{"8-bit", eight}, std::pair{"32-bit", full}, std::pair{"torch::optim", torch}}) {
      if (!v) continue;
      std::string delta = "", target = "";
      if (std::string(mode) == "8-bit" && full) {
        const double d = v->accuracy.mean() - full->accuracy.mean();
        delta = signed_fixed(d, 2, "");
        target = std::abs(d) <= 0.3 ? "met" : "**not met**";
      }
      md << "| " << opt << " | " << mode << " | " << v->runs << " | " << mean_std(v->accuracy, 2)
         << " | " << delta << " | " << target << " | " << mean_std(v->loss, 4) << " | "
         << cost_cells(*v) << " |\n";
    }
  }
  if (const auto def = read_variant(root / "fashion" / "adamw8bit" / "8bit")) {
    md << "\nThe default recipe (`lowbit-train` without arguments, AdamW8bit) took "
       << fixed(def->wall_s.mean(), 0) << " s of wall time per run on this machine (mean of "
       << def->runs << ").\n";
  }
  md << "\n";
}

// A study comparing validation losses against one reference variant.
void loss_section(std::ostream& md, const fs::path& dir, const std::string& title,
                  const std::string& intro,
                  const std::vector<std::pair<std::string, std::string>>& variants,
                  const std::string& reference, const std::string& compared,
                  double target_percent) {
  md << "## " << title << "\n\n"
     << intro << "\n\n"
     << "| variant | runs | validation loss | Δ vs " << reference << " | target | " << kCostHeader
     << " |\n|---|---|---|---|---|---|---|---|---|---|\n";
  std::map<std::string, Variant> found;
  for (const auto& [name, label] : variants) {
    if (auto v = read_variant(dir / name)) found.emplace(name, *v);
  }
  for (const auto& [name, label] : variants) {
    const auto it = found.find(name);
    if (it == found.end()) continue;
    const Variant& v = it->second;
    std::string delta = "", target = "";
    const auto ref = std::find_if(variants.begin(), variants.end(),
                                  [&](const auto& p) { return p.second == reference; });
    if (ref != variants.end() && found.count(ref->first) && name != ref->first) {
      const double base = found.at(ref->first).loss.mean();
      const double d = 100.0 * (v.loss.mean() - base) / base;
      delta = signed_fixed(d, 2, "%");
      if (name == compared) target = std::abs(d) <= target_percent ? "met" : "**not met**";
    }
    md << "| " << label << " | " << v.runs << " | " << mean_std(v.loss, 4) << " | " << delta
       << " | " << target << " | " << cost_cells(v) << " |\n";
  }
  md << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: lowbit-fidelity-report <runs root> <out.md> <machine description>\n";
    return 2;
  }
  try {
    const fs::path root = argv[1];
    std::ostringstream md;
    md << "# lowbit fidelity report\n\n"
       << "Written by `scripts/fidelity.sh` (through `lowbit-fidelity-report`) from the runs "
          "under `"
       << root.string() << "`; do not edit by hand. Machine: " << argv[3]
       << ". Costs are means over the runs: process CPU time per optimizer step (forward, "
          "backward and update) and of the update alone (CPU time, not wall time: the machine "
          "is shared, and the runs ran at low priority), optimizer state held at the end, the "
          "process's peak resident memory (data sets included), and the 1-minute load average "
          "at the end of the run.\n\n";
    fashion_section(md, root);
    loss_section(md, root / "kjv", "KJV character GPT: validation loss",
                 "Recipes `configs/kjv_gpt_adamw8bit.yaml` and `configs/kjv_gpt_adamw32.yaml` "
                 "(2 layers, 4 heads, width 64, context 64, 1000 steps of 32 windows). Target: "
                 "AdamW8bit within 1% of 32-bit AdamW (torch::optim::AdamW).",
                 {{"torch_adamw", "torch::optim::AdamW (32-bit)"},
                  {"adamw8bit_32bit", "AdamW8bit, optim_bits 32"},
                  {"adamw8bit", "AdamW8bit"}},
                 "torch::optim::AdamW (32-bit)", "adamw8bit", 1.0);
    loss_section(
        md, root / "qlora", "QLoRA on fortunes: validation loss",
        "Recipe `configs/fortunes_qlora.yaml`: the KJV GPT (AdamW8bit run, seed 0) "
        "fine-tuned on Debian's fortunes with LoRA r 8 on every attention and MLP "
        "linear, 400 steps. Target: NF4 base + LoRA within 3% of an fp32 base + LoRA.",
        {{"fp32_base", "fp32 base + LoRA"}, {"nf4", "NF4 base + LoRA"}, {"fp4", "FP4 base + LoRA"}},
        "fp32 base + LoRA", "nf4", 3.0);
    const fs::path out = argv[2];
    if (!out.parent_path().empty()) fs::create_directories(out.parent_path());
    lowbit::quant::write_file_atomically(out.string(), md.str());
    std::cout << "wrote " << out.string() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "lowbit-fidelity-report: " << lowbit::error_text(e) << "\n";
    return 1;
  }
}
