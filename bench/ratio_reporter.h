// A Google Benchmark reporter that prints, after the usual table, each
// benchmark's speed relative to its baseline measured in the same run.
// Benchmarks name themselves "<op>/<group...>"; the baseline of a group is
// the benchmark "<baseline_op>/<group...>" (e.g. memcpy/cpu/threads:1).
// Benchmarks use Unit(benchmark::kMillisecond) and set a "bytes" counter (bytes
// moved per iteration) so bandwidths can be compared too. Several baselines
// (e.g. a library counterpart and memcpy) print one table each. With
// --benchmark_repetitions the ratios are of the medians (add
// --benchmark_enable_random_interleaving=true on a noisy machine, so that
// drift hits every op alike). The context lines name the instruction-set path
// the CPU kernels ran (kernels/cpu_isa.h; LOWBIT_CPU_ISA chooses another).
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/blas_core.h"
#include "kernels/cpu_isa.h"

namespace lowbit::bench {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  explicit RatioReporter(std::string baseline_op) : baseline_ops_{std::move(baseline_op)} {}
  // One ratio table per baseline (e.g. a library call and a stronger roofline).
  explicit RatioReporter(std::vector<std::string> baseline_ops)
      : baseline_ops_(std::move(baseline_ops)) {}

  // Whether a run errored or was skipped: Google Benchmark 1.7 (Debian) has
  // Run::error_occurred, 1.8 (Ubuntu 24.04) replaced it by Run::skipped.
  template <typename R>
  static auto failed(const R& r, int) -> decltype(r.skipped, bool()) {
    return r.skipped != decltype(r.skipped){};
  }
  template <typename R>
  static bool failed(const R& r, long) {
    return r.error_occurred;
  }

  bool ReportContext(const Context& context) override {
    const bool ok = ConsoleReporter::ReportContext(context);
    std::string runnable;
    for (kernels::CpuIsa isa : kernels::cpu_isas())
      runnable += std::string(runnable.empty() ? "" : ", ") + kernels::cpu_isa_name(isa);
    // Beside the library's own context lines (Google Benchmark writes them to
    // the error stream).
    GetErrorStream() << "lowbit CPU kernels: " << kernels::cpu_isa_name(kernels::cpu_isa())
                     << " path (this CPU runs: " << runnable << "); 4-bit gemv weight prefetch "
                     << (kernels::cpu_prefetch_weights() ? "on" : "off") << "\n";
    if (const std::string blas = kernels::blas_description(); !blas.empty())
      GetErrorStream() << "BLAS: " << blas << "\n";
    return ok;
  }

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (failed(r, 0)) continue;
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.run_type != Run::RT_Iteration && !median) continue;
      const std::string name = r.run_name.str();
      const size_t slash = name.find('/');
      if (slash == std::string::npos) continue;
      Entry e{name.substr(0, slash), group_of(name.substr(slash + 1)), r.GetAdjustedRealTime(),
              r.counters.count("bytes") ? double(r.counters.at("bytes")) : 0.0,
              benchmark::GetTimeUnitString(r.time_unit)};
      (median ? medians_ : entries_).push_back(e);
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    // A benchmark run with repetitions counts by its median; one run once
    // (e.g. Repetitions(1) beside the flag) by its only iteration.
    std::vector<Entry> chosen = medians_;
    for (const Entry& e : entries_) {
      bool has_median = false;
      for (const Entry& m : medians_) has_median |= m.op == e.op && m.group == e.group;
      if (!has_median) chosen.push_back(e);
    }
    entries_ = chosen;
    for (const std::string& baseline : baseline_ops_) print_ratios(baseline);
  }

 private:
  struct Entry {
    std::string op, group;
    double time;   // in the benchmark's time unit
    double bytes;  // bytes moved per iteration (counter "bytes")
    const char* unit;
  };

  void print_ratios(const std::string& baseline_op) const {
    std::map<std::string, const Entry*> base;
    for (const Entry& e : entries_)
      if (e.op == baseline_op) base[e.group] = &e;
    std::printf("\n%-28s %-34s %12s %14s %14s\n", "op", "group", "time", "speed vs",
                "bytes/s vs");
    std::printf("%-28s %-34s %12s %14s %14s\n", "", "", "", baseline_op.c_str(),
                baseline_op.c_str());
    for (const Entry& e : entries_) {
      auto it = base.find(e.group);
      if (it == base.end()) continue;
      const Entry& b = *it->second;
      const double speed = b.time / e.time;
      const double bw = (e.bytes > 0 && b.bytes > 0) ? (e.bytes / e.time) / (b.bytes / b.time) : 0;
      std::printf("%-28s %-34s %10.3f %s %13.2fx %13.0f%%\n", e.op.c_str(), e.group.c_str(),
                  e.time, e.unit, speed, bw * 100);
    }
  }

  // The group without the suffixes Google Benchmark appends (min_time,
  // real_time, manual_time).
  static std::string group_of(std::string rest) {
    for (const char* suffix :
         {"/min_time:", "/real_time", "/manual_time", "/iterations:", "/repeats:"}) {
      const size_t at = rest.find(suffix);
      if (at != std::string::npos) rest.resize(at);
    }
    return rest;
  }

  std::vector<std::string> baseline_ops_;
  std::vector<Entry> entries_;
  std::vector<Entry> medians_;  // aggregates, when repetitions were asked for
};

}  // namespace lowbit::bench
