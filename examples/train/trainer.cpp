#include "examples/train/trainer.h"

#include <sys/resource.h>
#include <time.h>

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "examples/train/checkpoint.h"
#include "examples/train/grad_clip.h"
#include "examples/train/metrics_log.h"
#include "examples/train/optimizer_factory.h"
#include "examples/train/prepare_model.h"
#include "examples/train/progress.h"
#include "examples/train/schedule.h"
#include "examples/train/svg_plot.h"
#include "lora/peft_io.h"

namespace lowbit::train {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double process_cpu_seconds() {
  timespec t{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Wall-clock and process CPU time since construction. On a machine shared
// with other work, CPU time is the stabler measure of what a step costs.
struct Stopwatch {
  Clock::time_point wall = Clock::now();
  double cpu = process_cpu_seconds();
  double wall_seconds() const { return seconds_since(wall); }
  double cpu_seconds() const { return process_cpu_seconds() - cpu; }
};

// Totals over the steps this process ran.
struct StepTimes {
  double wall = 0.0, cpu = 0.0, update_wall = 0.0, update_cpu = 0.0;
};

double peak_rss_mib() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// The 1-minute load average: how busy the machine was while timing.
double load_average() {
  double load[1] = {0.0};
  return ::getloadavg(load, 1) == 1 ? load[0] : -1.0;
}

// Keys a resumed run may change: where files go, how long to train, how often
// to evaluate, and how to compute (threads, backend) - not what is trained.
const std::vector<std::string> kResumableChanges = {
    "checkpoint",       "log",     "train.steps", "train.epochs",   "train.threads",
    "train.eval_every", "backend", "data.path",   "data.eval_limit"};

// The checkpoint to resume from per checkpoint.resume, or none for a fresh run.
std::optional<Checkpoint> find_resume(const config::Recipe& r, std::ostream& out) {
  const std::string& dir = r.checkpoint.dir;
  const std::string& resume = r.checkpoint.resume;
  if (resume == "never") {
    const std::vector<int64_t> old = list_checkpoints(dir);
    for (int64_t step : old) fs::remove(checkpoint_path(dir, step));
    if (!old.empty()) {
      out << "removed " << old.size() << " checkpoint(s) of an earlier run in " << dir
          << " (checkpoint.resume: never)\n";
    }
    return std::nullopt;
  }
  if (resume != "auto") return Checkpoint(resume);
  const std::vector<int64_t> steps = list_checkpoints(dir);
  for (auto step = steps.rbegin(); step != steps.rend(); ++step) {
    try {
      return Checkpoint(checkpoint_path(dir, *step));
    } catch (const c10::Error& e) {
      out << "warning: skipping unreadable checkpoint: " << e.msg() << "\n";
    }
  }
  return std::nullopt;
}

void check_same_recipe(const Checkpoint& checkpoint, const config::Recipe& r) {
  const std::vector<std::string> changes =
      config::changed_keys(checkpoint.state().recipe_yaml, r, kResumableChanges);
  if (changes.empty()) return;
  std::string list;
  for (const std::string& c : changes) list += "\n  " + c;
  throw config::RecipeError(
      "checkpoint.resume: " + checkpoint.path() + " was written by a different recipe:" + list +
      "\nresume with the same recipe, set checkpoint.resume: never to start over, or choose "
      "another checkpoint.dir");
}

std::string percent(double share) {
  std::ostringstream os;
  os.precision(2);
  os << std::fixed << 100.0 * share << "%";
  return os.str();
}

std::string describe(const Evaluation& e) {
  std::ostringstream os;
  os << "loss " << e.loss;
  if (e.accuracy) os << ", accuracy " << percent(*e.accuracy);
  return os.str();
}

}  // namespace

RunResult run_training(const config::Recipe& r, const RunOptions& options) {
  std::ostream& out = *options.out;
  const Clock::time_point run_start = Clock::now();
  if (r.train.threads > 0) torch::set_num_threads(int(r.train.threads));
  kernels::BackendOptions backend_options;
  backend_options.kind = r.backend;
  const std::shared_ptr<kernels::Backend> backend = kernels::make_backend(backend_options);

  std::unique_ptr<Task> task = make_task(r);
  const std::shared_ptr<torch::nn::Module> model = task->module();
  if (!r.model.init.empty()) load_model(r.model.init, *model);
  const PreparedModel prepared = prepare_model(*model, r.quant, r.lora, backend);
  BuiltOptimizer built =
      make_optimizer(r.optimizer, prepared.trainable, prepared.trainable_names, backend);
  torch::optim::Optimizer& optimizer = *built.optimizer;
  std::vector<double> base_lr;
  for (auto& group : optimizer.param_groups()) base_lr.push_back(group.options().get_lr());

  const int64_t per_epoch = task->batches_per_epoch();
  const int64_t total = r.train.steps > 0 ? r.train.steps
                                          : (r.train.epochs * per_epoch + r.train.grad_accum - 1) /
                                                r.train.grad_accum;
  if (r.schedule.warmup_steps >= total) {
    throw config::RecipeError("schedule.warmup_steps: " + std::to_string(r.schedule.warmup_steps) +
                              " is not below the run's " + std::to_string(total) +
                              " steps; allowed: fewer warmup steps than training steps");
  }
  const Schedule schedule(r.schedule.name, r.schedule.warmup_steps, total, r.schedule.min_lr_ratio);

  fs::create_directories(r.checkpoint.dir);
  remove_stale_temp_files(r.checkpoint.dir);
  TrainerState state;
  state.recipe_yaml = config::to_yaml(r);
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::optional<Checkpoint> checkpoint = find_resume(r, out);
  if (checkpoint) {
    check_same_recipe(*checkpoint, r);
    checkpoint->restore(*model, optimizer);
    state.step = checkpoint->state().step;
    state.micro_batch = checkpoint->state().micro_batch;
    generator.set_state(checkpoint->state().rng_state);
  }
  RunResult result;
  result.start_step = result.end_step = state.step;
  result.total_steps = total;
  if (state.step >= total) {
    out << checkpoint->path() << " already holds the run's last step (" << state.step << " of "
        << total << "); raise train.steps or train.epochs to train on, or pass --set "
        << "checkpoint.resume=never to start over\n";
    return result;
  }
  MetricsLog metrics(r.log.metrics, checkpoint ? state.step : -1);

  out << "lowbit-train " << r.source << "\n  data: " << task->describe()
      << "\n  model: " << r.model.name << ", " << prepared.description
      << "\n  optimizer: " << built.description << "\n  steps: " << total << " ("
      << r.train.batch_size << " x " << r.train.grad_accum << " per step), schedule "
      << r.schedule.name << "\n  threads: " << torch::get_num_threads() << ", backend "
      << backend->name() << "\n  run directory: " << r.checkpoint.dir << "\n";
  if (checkpoint)
    out << "  resumed from " << checkpoint->path() << " at step " << state.step << "\n";
  out.flush();

  Progress progress(Progress::resolve(r.log.progress, options.terminal), state.step, total,
                    r.log.every, out);
  StepTimes times;
  for (int64_t step = state.step + 1; step <= total; ++step) {
    const Stopwatch step_watch;
    const double lr_factor = schedule.factor(step);
    for (size_t g = 0; g < base_lr.size(); ++g) {
      optimizer.param_groups()[g].options().set_lr(base_lr[g] * lr_factor);
    }
    // Gradients are dropped rather than zeroed, the same in every libtorch
    // version and the same as in a process that just resumed.
    for (const torch::Tensor& p : prepared.trainable) p.mutable_grad() = torch::Tensor();
    double loss_sum = 0.0;
    for (int64_t a = 0; a < r.train.grad_accum; ++a) {
      const torch::Tensor loss = task->loss(state.micro_batch++);
      (loss / double(r.train.grad_accum)).backward();
      loss_sum += loss.item<double>();
    }
    const double loss = loss_sum / double(r.train.grad_accum);
    TORCH_CHECK(std::isfinite(loss), "step ", step, ": the training loss is ", loss,
                "; lower optimizer.lr or set train.grad_clip");
    const double grad_norm = clip_gradients(prepared.trainable, r.train.grad_clip);
    const Stopwatch update_watch;
    optimizer.step();
    const double update = update_watch.wall_seconds(), update_cpu = update_watch.cpu_seconds();
    const double elapsed = step_watch.wall_seconds(), elapsed_cpu = step_watch.cpu_seconds();
    times.wall += elapsed;
    times.cpu += elapsed_cpu;
    times.update_wall += update;
    times.update_cpu += update_cpu;
    state.step = step;
    const double lr = base_lr[0] * lr_factor;
    metrics.write({{"type", "train"},
                   {"step", step},
                   {"epoch", double(state.micro_batch) / double(per_epoch)},
                   {"loss", loss},
                   {"lr", lr},
                   {"grad_norm", grad_norm},
                   {"step_s", elapsed},
                   {"update_s", update},
                   {"step_cpu_s", elapsed_cpu},
                   {"update_cpu_s", update_cpu}});
    progress.step(step, loss, lr, elapsed);

    const bool epoch_end =
        r.train.epochs > 0 &&
        state.micro_batch / per_epoch > (state.micro_batch - r.train.grad_accum) / per_epoch;
    const bool evaluate =
        step == total || (r.train.eval_every > 0 ? step % r.train.eval_every == 0 : epoch_end);
    if (evaluate) {
      const Clock::time_point eval_start = Clock::now();
      const Evaluation e = task->evaluate();
      nlohmann::json record = {{"type", "eval"}, {"step", step}, {"loss", e.loss}};
      if (e.accuracy) record["accuracy"] = *e.accuracy;
      record["eval_s"] = seconds_since(eval_start);
      metrics.write(record);
      progress.message("step " + std::to_string(step) + " eval: " + describe(e));
      if (step == total) result.final_evaluation = e;
    }
    const bool stop = options.stop != nullptr && *options.stop != 0;
    if (step == total || stop || (r.checkpoint.every > 0 && step % r.checkpoint.every == 0)) {
      state.rng_state = generator.get_state();
      save_checkpoint(checkpoint_path(r.checkpoint.dir, step), *model, optimizer, state);
      prune_checkpoints(r.checkpoint.dir, r.checkpoint.keep);
    }
    if (stop) {
      progress.message("interrupted: checkpoint of step " + std::to_string(step) + " saved in " +
                       r.checkpoint.dir);
      result.interrupted = true;
      break;
    }
  }
  progress.finish();

  const int64_t steps_run = state.step - result.start_step;
  result.end_step = state.step;
  const double per_step = steps_run > 0 ? 1.0 / double(steps_run) : 0.0;
  result.mean_step_seconds = times.wall * per_step;
  result.mean_update_seconds = times.update_wall * per_step;
  result.mean_step_cpu_seconds = times.cpu * per_step;
  result.mean_update_cpu_seconds = times.update_cpu * per_step;
  result.optimizer_state_bytes = built.state_bytes();
  result.peak_rss_mib = peak_rss_mib();
  if (!result.interrupted) {
    save_model((fs::path(r.checkpoint.dir) / "model.pt").string(), *model);
    if (prepared.adapters) {
      lora::save_adapter(*model, (fs::path(r.checkpoint.dir) / "adapter").string(),
                         *prepared.adapters);
    }
    nlohmann::json summary = {{"type", "summary"},
                              {"step", state.step},
                              {"steps_run", steps_run},
                              {"mean_step_s", result.mean_step_seconds},
                              {"mean_update_s", result.mean_update_seconds},
                              {"mean_step_cpu_s", result.mean_step_cpu_seconds},
                              {"mean_update_cpu_s", result.mean_update_cpu_seconds},
                              {"load_average", load_average()},
                              {"optimizer_state_bytes", result.optimizer_state_bytes},
                              {"nonfinite_skipped_steps", built.skipped_steps()},
                              {"peak_rss_mib", result.peak_rss_mib},
                              {"wall_s", seconds_since(run_start)},
                              {"optimizer", built.description}};
    if (result.final_evaluation) {
      summary["eval_loss"] = result.final_evaluation->loss;
      if (result.final_evaluation->accuracy) {
        summary["eval_accuracy"] = *result.final_evaluation->accuracy;
      }
    }
    metrics.write(summary);
  }
  if (fs::exists(r.log.metrics) && state.step > 0) {
    write_plot(r.log.metrics, r.log.plot, r.name + " (" + r.optimizer.name + ")");
  }
  std::ostringstream done;
  done << (result.interrupted ? "stopped" : "done") << " at step " << state.step << "/" << total;
  if (result.final_evaluation) done << ": " << describe(*result.final_evaluation);
  done << "\n  " << 1e3 * result.mean_step_seconds << " ms/step (optimizer "
       << 1e3 * result.mean_update_seconds << " ms; CPU " << 1e3 * result.mean_step_cpu_seconds
       << " ms/step), optimizer state "
       << double(result.optimizer_state_bytes) / (1 << 20) << " MiB, peak RSS "
       << result.peak_rss_mib << " MiB, wall " << format_duration(seconds_since(run_start))
       << "\n  metrics " << r.log.metrics << ", plot " << r.log.plot;
  if (!result.interrupted) {
    done << ", model " << (fs::path(r.checkpoint.dir) / "model.pt").string();
    if (prepared.adapters)
      done << ", PEFT adapter " << (fs::path(r.checkpoint.dir) / "adapter").string();
  }
  done << "\n";
  out << done.str();
  out.flush();
  return result;
}

}  // namespace lowbit::train
