#include "examples/train/trainer.h"

#include <sys/resource.h>
#include <time.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/utils.h>
#ifdef LOWBIT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "examples/train/checkpoint.h"
#include "examples/train/grad_clip.h"
#include "examples/train/metrics_log.h"
#include "examples/train/optimizer_factory.h"
#include "examples/train/prepare_model.h"
#include "examples/train/progress.h"
#include "examples/train/run_model.h"
#include "examples/train/schedule.h"
#include "examples/train/svg_plot.h"
#include "kernels/blas_core.h"
#include "lora/peft_io.h"
#include "quant/atomic_file.h"

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

// The high-water mark of tensor memory on `device` (0 for the CPU).
double peak_gpu_mib(const torch::Device& device) {
#ifdef LOWBIT_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return double(stats.allocated_bytes[0].peak) / double(1 << 20);  // [0]: all pools
  }
#endif
  (void)device;
  return 0.0;
}

// The 1-minute load average: how busy the machine was while timing.
double load_average() {
  double load[1] = {0.0};
  return ::getloadavg(load, 1) == 1 ? load[0] : -1.0;
}

// Keys a resumed run may change: where files go, how long to train, how often
// to evaluate, how to compute (threads, backend, device) and what samples to
// print - not what is trained. Checkpoints hold CPU tensors, so a GPU run
// resumes on the CPU and back.
const std::vector<std::string> kResumableChanges = {
    "checkpoint",       "log",     "train.steps", "train.epochs",    "train.threads",
    "train.eval_every", "backend", "device",      "data.path",       "data.eval_limit",
    "generate",         "distributed"};

// The checkpoint to resume from per checkpoint.resume, or none for a fresh run.
// Only rank 0 (`main`) deletes the checkpoints of an earlier run.
std::optional<Checkpoint> find_resume(const config::Recipe& r, bool main, std::ostream& out) {
  const std::string& dir = r.checkpoint.dir;
  const std::string& resume = r.checkpoint.resume;
  if (resume == "never") {
    if (!main) return std::nullopt;
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
  if (e.perplexity) os << ", perplexity " << *e.perplexity;
  return os.str();
}

// One run of a recipe: the set-up, the step loop and the end of the run.
class Run {
 public:
  Run(const config::Recipe& recipe, const RunOptions& options);
  // Loads the checkpoint to resume from, if any; false when it already holds
  // the run's last step.
  bool resume();
  void train();
  RunResult finish();
  const RunResult& result() const { return result_; }

 private:
  // One optimizer step (grad_accum micro-batches); logs it.
  void step(int64_t step);
  void evaluate(int64_t step);
  void print_header(const std::optional<Checkpoint>& checkpoint) const;
  // The model's continuations of generate.prompts, under `title`.
  void print_samples(const std::string& title);
  std::string model_path() const { return final_model_path(r_); }
  std::string adapter_path() const { return (fs::path(r_.checkpoint.dir) / "adapter").string(); }
  std::string quantization_path() const {
    return (fs::path(r_.checkpoint.dir) / "quantization.txt").string();
  }
  // Rank 0 of a multi-process run, or a process alone: the one that logs and writes files.
  bool main() const { return !ranks_ || ranks_->rank() == 0; }
  void log(const nlohmann::json& record) {
    if (metrics_) metrics_->write(record);
  }
  // Multi-process runs: the parameters of rank 0 on every rank, and ZeRO-1 when asked.
  void start_ranks();
  // Whether the optimizer states are sharded over the ranks (ZeRO-1), before start_ranks().
  bool sharded() const { return ranks_ && r_.distributed.zero; }
  // The checkpoint of `step`, written by rank 0. Collective under ZeRO-1: every rank takes part
  // in gathering the optimizer's one logical state dict.
  void write_checkpoint(int64_t step);
  // Every rank's `value`, by rank (the value itself for a process alone).
  template <typename T>
  std::vector<T> by_rank(T value);

  const config::Recipe& r_;
  const RunOptions& options_;
  const std::shared_ptr<Ranks> ranks_;
  std::ostream& out_;
  const Clock::time_point start_ = Clock::now();
  RunModel built_model_;
  const torch::Device device_;
  const std::unique_ptr<Task>& task_;
  const std::shared_ptr<torch::nn::Module>& model_;
  const PreparedModel& prepared_;
  BuiltOptimizer built_;
  std::unique_ptr<ShardedOptimizer> zero_;  // distributed.zero with several ranks
  bool stop_agreed_ = false;  // several ranks: any rank asked to stop (Ctrl-C) this step
  std::vector<double> base_lr_;
  int64_t per_epoch_ = 1, total_ = 0;
  std::optional<Schedule> schedule_;
  at::Generator generator_ = at::detail::getDefaultCPUGenerator();
  // CUDA runs: dropout on the GPU draws from the device's own generator, so
  // checkpoints carry its state too.
  std::optional<at::Generator> cuda_generator_;
  TrainerState state_;
  std::optional<MetricsLog> metrics_;
  std::optional<Progress> progress_;
  StepTimes times_;
  RunResult result_;
};

Run::Run(const config::Recipe& r, const RunOptions& options)
    : r_(r),
      options_(options),
      ranks_(options.ranks),
      out_(*options.out),
      built_model_(make_run_model(
          r, ranks_ ? DataShard{ranks_->rank(), ranks_->size()} : DataShard{},
          ranks_ && ranks_->cuda_device() >= 0 ? ranks_->cuda_device() : 0)),
      device_(built_model_.device),
      task_(built_model_.task),
      model_(built_model_.model),
      prepared_(built_model_.prepared) {
  if (device_.is_cuda()) cuda_generator_ = at::globalContext().defaultGenerator(device_);
  built_ = make_optimizer(r.optimizer, prepared_.trainable, prepared_.trainable_names,
                          built_model_.backend);
  for (auto& group : built_.optimizer->param_groups()) base_lr_.push_back(group.options().get_lr());

  per_epoch_ = task_->batches_per_epoch();
  total_ = r.train.steps > 0
               ? r.train.steps
               : (r.train.epochs * per_epoch_ + r.train.grad_accum - 1) / r.train.grad_accum;
  if (r.schedule.warmup_steps >= total_) {
    throw config::RecipeError("schedule.warmup_steps: " + std::to_string(r.schedule.warmup_steps) +
                              " is not below the run's " + std::to_string(total_) +
                              " steps; allowed: fewer warmup steps than training steps");
  }
  schedule_.emplace(r.schedule.name, r.schedule.warmup_steps, total_, r.schedule.min_lr_ratio);
  state_.recipe_yaml = config::to_yaml(r);
  result_.total_steps = total_;
}

void Run::start_ranks() {
  if (!ranks_) return;
  // A resumed run reads the same checkpoint on every rank; a fresh one takes rank 0's
  // initialisation (the same seed gives the same weights anyway).
  std::vector<torch::Tensor> tensors;
  for (const auto& p : model_->parameters()) tensors.push_back(p);
  for (const auto& b : model_->buffers()) tensors.push_back(b);
  ranks_->broadcast_parameters(tensors);
  ranks_->sync_gradients_of(prepared_.trainable);
  if (!r_.distributed.zero) return;
  if (!r_.optimizer.fp32_params.empty())
    throw config::RecipeError("optimizer.fp32_params: distributed.zero shards the states by "
                              "blocks, not by parameter names; leave fp32_params empty or set "
                              "distributed.zero: false");
  const int64_t block_size = r_.optimizer.block_size.value_or(256);
  const int64_t min_8bit_size = r_.optimizer.min_8bit_size.value_or(4096);
  zero_ = ranks_->shard_optimizer(
      prepared_.trainable,
      [this](std::vector<torch::Tensor> shards) {
        const std::vector<std::string> names(shards.size());
        return make_optimizer(r_.optimizer, shards, names, built_model_.backend).optimizer;
      },
      block_size, min_8bit_size);
}

template <typename T>
std::vector<T> Run::by_rank(T value) {
  if (!ranks_) return {value};
  std::vector<double> slots(size_t(ranks_->size()), 0.0);
  slots[size_t(ranks_->rank())] = double(value);
  ranks_->sum(slots);
  return std::vector<T>(slots.begin(), slots.end());
}

bool Run::resume() {
  if (main()) {
    fs::create_directories(r_.checkpoint.dir);
    remove_stale_temp_files(r_.checkpoint.dir);
    if (!prepared_.quantization_table.empty())
      quant::write_file_atomically(quantization_path(), prepared_.quantization_table);
  }
  std::optional<Checkpoint> checkpoint = find_resume(r_, main(), out_);
  if (checkpoint) {
    check_same_recipe(*checkpoint, r_);
    // ZeRO-1 shards the states of the restored parameters: its optimizer, built in
    // start_ranks(), loads them after.
    if (sharded()) {
      checkpoint->restore_model(*model_);
    } else {
      checkpoint->restore(*model_, *built_.optimizer);
      built_.move_states(device_);
    }
    state_.step = checkpoint->state().step;
    state_.micro_batch = checkpoint->state().micro_batch;
    generator_.set_state(checkpoint->state().rng_state);
    // A CPU run's checkpoint has none: GPU dropout then goes on from the seed.
    if (cuda_generator_ && checkpoint->state().cuda_rng_state.defined()) {
      cuda_generator_->set_state(checkpoint->state().cuda_rng_state);
    }
  }
  if (ranks_) {
    ranks_->check_same(
        "the checkpoint to resume from",
        fingerprint(std::to_string(state_.step) + "/" + std::to_string(state_.micro_batch)),
        "rank " + std::to_string(ranks_->rank()) + " resumes " +
            (checkpoint ? checkpoint->path() : std::string("no checkpoint")) +
            "; checkpoint.dir must be a folder every rank reads (one filesystem)");
    start_ranks();
    // The file holds one logical state dict, whether one process or any number of ranks
    // wrote it: each rank keeps its own shards of it.
    if (checkpoint && zero_)
      checkpoint->load_optimizer([this](torch::serialize::InputArchive& a) { zero_->load(a); });
  }
  result_.start_step = result_.end_step = state_.step;
  if (state_.step >= total_) {
    out_ << checkpoint->path() << " already holds the run's last step (" << state_.step << " of "
         << total_ << "); raise train.steps or train.epochs to train on, or pass --set "
         << "checkpoint.resume=never to start over\n";
    return false;
  }
  if (!main()) return true;
  metrics_.emplace(r_.log.metrics, checkpoint ? state_.step : -1);
  print_header(checkpoint);
  print_samples(checkpoint ? "samples at step " + std::to_string(state_.step)
                           : "samples before training");
  return true;
}

void Run::print_samples(const std::string& title) {
  const std::vector<std::string> samples = task_->continue_prompts(r_.generate.prompts);
  if (samples.empty()) return;
  out_ << "  " << title << ":\n";
  for (size_t i = 0; i < samples.size(); ++i) {
    out_ << "    [" << r_.generate.prompts[i] << "] -> " << samples[i] << "\n";
    log({{"type", "sample"},
                     {"step", state_.step},
                     {"prompt", r_.generate.prompts[i]},
                     {"text", samples[i]}});
  }
  out_.flush();
}

void Run::print_header(const std::optional<Checkpoint>& checkpoint) const {
  out_ << "lowbit-train " << r_.source << "\n  data: " << task_->describe()
       << "\n  model: " << r_.model.name << ", " << prepared_.description
       << "\n  optimizer: " << built_.description << "\n  steps: " << total_ << " ("
       << r_.train.batch_size << " x " << r_.train.grad_accum << " per step), schedule "
       << r_.schedule.name << "\n  threads: " << torch::get_num_threads() << ", backend "
       << built_model_.backend_name << " (" << built_model_.backend_reason << ")\n";
  if (const std::string blas = kernels::blas_description(); !blas.empty())
    out_ << "  BLAS: " << blas << "\n";
  out_ << "  run directory: " << r_.checkpoint.dir << "\n";
  if (ranks_) {
    out_ << "  processes: " << ranks_->size() << " (data parallel over "
         << ranks_->collectives() << "; rows "
         << DataShard{0, ranks_->size()}.end(r_.train.batch_size) << " of "
         << r_.train.batch_size << " per micro-batch on rank 0"
         << (zero_ ? "; ZeRO-1: optimizer states sharded" : "") << ")\n";
  }
  if (!prepared_.quantization_table.empty())
    out_ << "  quantization (" << quantization_path() << "):\n" << prepared_.quantization_table;
  if (checkpoint) {
    out_ << "  resumed from " << checkpoint->path() << " at step " << state_.step << "\n";
  }
  out_.flush();
}

void Run::train() {
  progress_.emplace(Progress::resolve(r_.log.progress, options_.terminal), state_.step, total_,
                    r_.log.every, out_);
  for (int64_t step = state_.step + 1; step <= total_; ++step) {
    this->step(step);
    const bool epoch_end =
        r_.train.epochs > 0 &&
        state_.micro_batch / per_epoch_ > (state_.micro_batch - r_.train.grad_accum) / per_epoch_;
    const bool eval_due =
        step == total_ || (r_.train.eval_every > 0 ? step % r_.train.eval_every == 0 : epoch_end);
    if (main() && eval_due) {
      evaluate(step);
    }
    // Every rank agrees on `stop`, so under ZeRO-1 all of them join the save.
    const bool stop = ranks_ ? stop_agreed_ : options_.stop != nullptr && *options_.stop != 0;
    if (step == total_ || stop || (r_.checkpoint.every > 0 && step % r_.checkpoint.every == 0))
      write_checkpoint(step);
    if (stop) {
      progress_->message("interrupted: checkpoint of step " + std::to_string(step) +
                         " saved in " + r_.checkpoint.dir);
      result_.interrupted = true;
      break;
    }
  }
  progress_->finish();
}

void Run::write_checkpoint(int64_t step) {
  const std::string path = checkpoint_path(r_.checkpoint.dir, step);
  torch::serialize::OutputArchive optimizer_state;
  if (zero_) zero_->save(optimizer_state);
  std::exception_ptr failure;
  if (main()) {
    try {
      state_.rng_state = generator_.get_state();
      if (cuda_generator_) state_.cuda_rng_state = cuda_generator_->get_state();
      if (!zero_) {
        built_.move_states(torch::kCPU);  // files hold CPU tensors (a no-op on a CPU run)
        built_.optimizer->save(optimizer_state);
        built_.move_states(device_);
      }
      save_checkpoint(path, *model_, optimizer_state, state_);
      prune_checkpoints(r_.checkpoint.dir, r_.checkpoint.keep);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  // A failed save (a full disk) stops every rank now, rather than after distributed.timeout
  // in the next step's all-reduce; the previous checkpoints stay as they were.
  if (ranks_) {
    std::vector<double> failed = {failure ? 1.0 : 0.0};
    ranks_->sum(failed);
    if (failed[0] > 0.0 && !failure)
      throw std::runtime_error("rank 0 could not write " + path + " (see its error); the run "
                               "stops, and resumes from the previous checkpoint");
  }
  if (failure) std::rethrow_exception(failure);
}

void Run::step(int64_t step) {
  const Stopwatch step_watch;
  const double lr_factor = schedule_->factor(step);
  auto& groups = built_.optimizer->param_groups();
  for (size_t g = 0; g < base_lr_.size(); ++g) groups[g].options().set_lr(base_lr_[g] * lr_factor);
  // Gradients are dropped rather than zeroed, the same in every libtorch
  // version and the same as in a process that just resumed.
  for (const torch::Tensor& p : prepared_.trainable) p.mutable_grad() = torch::Tensor();
  double loss_sum = 0.0;
  for (int64_t a = 0; a < r_.train.grad_accum; ++a) {
    // The last backward sends each bucket of gradients to the other ranks as it completes.
    if (ranks_ && a + 1 == r_.train.grad_accum) ranks_->arm_gradients();
    const torch::Tensor loss = task_->loss(state_.micro_batch++);
    if (!loss.defined()) continue;  // this rank has no rows of a small last batch
    (loss / double(r_.train.grad_accum)).backward();
    loss_sum += loss.item<double>();
  }
  if (ranks_) {
    // First, so that every rank has started its buckets' all-reduces before the next
    // collective (a rank without rows in the last micro-batch starts them all only here).
    ranks_->average_gradients();
    // The shard losses are weighted to average to the batch's loss; one all-reduce also
    // settles whether any rank was asked to stop, so that all stop after the same step.
    std::vector<double> values = {loss_sum, options_.stop && *options_.stop ? 1.0 : 0.0};
    ranks_->sum(values);
    loss_sum = values[0] / double(ranks_->size());
    stop_agreed_ = values[1] > 0.0;
  }
  const double loss = loss_sum / double(r_.train.grad_accum);
  TORCH_CHECK(std::isfinite(loss), "step ", step, ": the training loss is ", loss,
              "; lower optimizer.lr or set train.grad_clip");
  const double grad_norm = clip_gradients(prepared_.trainable, r_.train.grad_clip);
  const Stopwatch update_watch;
  if (zero_) {
    zero_->set_lr(base_lr_[0] * lr_factor);
    zero_->step();
  } else {
    built_.optimizer->step();
  }
  // A GPU queues the update and returns: wait, so update_s times the kernels.
  if (device_.is_cuda()) torch::cuda::synchronize(device_.index());
  const double update = update_watch.wall_seconds(), update_cpu = update_watch.cpu_seconds();
  const double elapsed = step_watch.wall_seconds(), elapsed_cpu = step_watch.cpu_seconds();
  times_.wall += elapsed;
  times_.cpu += elapsed_cpu;
  times_.update_wall += update;
  times_.update_cpu += update_cpu;
  state_.step = step;
  const double lr = base_lr_[0] * lr_factor;
  log({{"type", "train"},
                   {"step", step},
                   {"epoch", double(state_.micro_batch) / double(per_epoch_)},
                   {"loss", loss},
                   {"lr", lr},
                   {"grad_norm", grad_norm},
                   {"step_s", elapsed},
                   {"update_s", update},
                   {"step_cpu_s", elapsed_cpu},
                   {"update_cpu_s", update_cpu}});
  progress_->step(step, loss, lr, elapsed);
}

void Run::evaluate(int64_t step) {
  const Clock::time_point eval_start = Clock::now();
  const Evaluation e = task_->evaluate();
  nlohmann::json record = {{"type", "eval"}, {"step", step}, {"loss", e.loss}};
  if (e.accuracy) record["accuracy"] = *e.accuracy;
  if (e.perplexity) record["perplexity"] = *e.perplexity;
  record["eval_s"] = seconds_since(eval_start);
  log(record);
  progress_->message("step " + std::to_string(step) + " eval: " + describe(e));
  if (step == total_) result_.final_evaluation = e;
}

RunResult Run::finish() {
  const int64_t steps_run = state_.step - result_.start_step;
  result_.end_step = state_.step;
  const double per_step = steps_run > 0 ? 1.0 / double(steps_run) : 0.0;
  result_.mean_step_seconds = times_.wall * per_step;
  result_.mean_update_seconds = times_.update_wall * per_step;
  result_.mean_step_cpu_seconds = times_.cpu * per_step;
  result_.mean_update_cpu_seconds = times_.update_cpu * per_step;
  result_.optimizer_state_bytes = zero_ ? zero_->state_bytes() : built_.state_bytes();
  result_.peak_rss_mib = peak_rss_mib();
  result_.peak_gpu_mib = peak_gpu_mib(device_);
  if (ranks_) {
    result_.rank_peak_rss_mib = by_rank(result_.peak_rss_mib);
    result_.rank_peak_gpu_mib = by_rank(result_.peak_gpu_mib);
    result_.rank_optimizer_state_bytes = by_rank(result_.optimizer_state_bytes);
  }
  if (!main()) return result_;
  std::vector<std::string> exports;
  if (!result_.interrupted) {
    save_model(model_path(), *model_);
    if (prepared_.adapters) lora::save_adapter(*model_, adapter_path(), *prepared_.adapters);
    exports = task_->export_model();
    print_samples("samples after training");
    nlohmann::json summary = {{"type", "summary"},
                              {"step", state_.step},
                              {"steps_run", steps_run},
                              {"mean_step_s", result_.mean_step_seconds},
                              {"mean_update_s", result_.mean_update_seconds},
                              {"mean_step_cpu_s", result_.mean_step_cpu_seconds},
                              {"mean_update_cpu_s", result_.mean_update_cpu_seconds},
                              {"load_average", load_average()},
                              {"optimizer_state_bytes", result_.optimizer_state_bytes},
                              {"nonfinite_skipped_steps",
                               zero_ ? zero_->skipped_steps() : built_.skipped_steps()},
                              {"peak_rss_mib", result_.peak_rss_mib},
                              {"peak_gpu_mib", result_.peak_gpu_mib},
                              {"wall_s", seconds_since(start_)},
                              {"optimizer", built_.description}};
    if (ranks_) {
      summary["processes"] = ranks_->size();
      summary["rank_peak_rss_mib"] = result_.rank_peak_rss_mib;
      summary["rank_peak_gpu_mib"] = result_.rank_peak_gpu_mib;
      summary["rank_optimizer_state_bytes"] = result_.rank_optimizer_state_bytes;
    }
    if (result_.final_evaluation) {
      summary["eval_loss"] = result_.final_evaluation->loss;
      if (result_.final_evaluation->accuracy) {
        summary["eval_accuracy"] = *result_.final_evaluation->accuracy;
      }
      if (result_.final_evaluation->perplexity) {
        summary["eval_perplexity"] = *result_.final_evaluation->perplexity;
      }
    }
    log(summary);
  }
  write_plot(r_.log.metrics, r_.log.plot, r_.name + " (" + r_.optimizer.name + ")");

  out_ << (result_.interrupted ? "stopped" : "done") << " at step " << state_.step << "/"
       << total_;
  if (result_.final_evaluation) out_ << ": " << describe(*result_.final_evaluation);
  out_ << "\n  " << 1e3 * result_.mean_step_seconds << " ms/step (optimizer "
       << 1e3 * result_.mean_update_seconds << " ms; CPU " << 1e3 * result_.mean_step_cpu_seconds
       << " ms/step), optimizer state " << double(result_.optimizer_state_bytes) / (1 << 20)
       << " MiB, peak RSS " << result_.peak_rss_mib << " MiB";
  if (device_.is_cuda()) out_ << ", peak GPU " << result_.peak_gpu_mib << " MiB";
  if (ranks_) {
    out_ << " (by rank:";
    for (size_t k = 0; k < result_.rank_peak_rss_mib.size(); ++k) {
      out_ << " " << result_.rank_peak_rss_mib[k] << " MiB";
      if (device_.is_cuda()) out_ << ", GPU " << result_.rank_peak_gpu_mib[k] << " MiB";
      out_ << ", state " << double(result_.rank_optimizer_state_bytes[k]) / (1 << 20) << " MiB"
           << (k + 1 < result_.rank_peak_rss_mib.size() ? ";" : ")");
    }
  }
  out_ << ", wall " << format_duration(seconds_since(start_)) << "\n  metrics " << r_.log.metrics
       << ", plot " << r_.log.plot;
  if (!result_.interrupted) {
    out_ << ", model " << model_path();
    if (prepared_.adapters) out_ << ", PEFT adapter " << adapter_path();
    for (const std::string& e : exports) out_ << ", Hugging Face checkpoint " << e;
  }
  out_ << "\n";
  out_.flush();
  return result_;
}

}  // namespace

RunResult run_training(const config::Recipe& recipe, const RunOptions& options) {
  if (options.ranks) {
    // Before anything that reads data or builds a model: ranks that read different recipes
    // would otherwise fail later on a shape, or train on without a word.
    options.ranks->check_same(
        "the resolved recipe", fingerprint(config::to_yaml(recipe)),
        "start every rank with the same recipe and --set overrides (lowbit-train RECIPE "
        "--print-recipe prints what a rank resolved)");
    if (recipe.train.batch_size < options.ranks->size()) {
      throw config::RecipeError("train.batch_size: " + std::to_string(recipe.train.batch_size) +
                                " is below the run's " + std::to_string(options.ranks->size()) +
                                " processes; allowed: at least one example per process (the "
                                "batch size is the global batch, shared by the processes)");
    }
  }
  Run run(recipe, options);
  if (!run.resume()) return run.result();
  run.train();
  return run.finish();
}

}  // namespace lowbit::train
