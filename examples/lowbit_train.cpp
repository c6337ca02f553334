// lowbit-train: trains a model from a YAML recipe (configs/*.yaml; without
// one, the embedded default recipe configs/fashion_mnist_adamw8bit.yaml),
// with --set overrides, checkpoints and resume; renders metrics plots.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "examples/config/recipe.h"
#include "examples/config/schema.h"
#include "examples/train/finished_run.h"
#include "examples/train/launcher.h"
#include "examples/train/ranks.h"
#include "examples/train/svg_plot.h"
#include "examples/train/trainer.h"
#include "kernels/blas_core.h"

const char* lowbit_default_recipe();  // generated from configs/fashion_mnist_adamw8bit.yaml

namespace {

volatile std::sig_atomic_t stop_requested = 0;

// The first Ctrl-C finishes the step and saves a checkpoint; a second one
// kills the process as usual.
void on_interrupt(int) {
  stop_requested = 1;
  std::signal(SIGINT, SIG_DFL);
}

const char* kUsage = R"(usage:
  lowbit-train [RECIPE.yaml] [--set KEY=VALUE]... [--print-recipe]
  lowbit-train [RECIPE.yaml] [--set KEY=VALUE]... --nproc N
  lowbit-train RECIPE.yaml [--set KEY=VALUE]... --generate [--prompt TEXT]...
  lowbit-train RECIPE.yaml [--set KEY=VALUE]... --merge [OUT_DIR]
  lowbit-train --plot METRICS.jsonl [OUT.svg]
  lowbit-train --list-keys

Trains the model a recipe describes (without RECIPE, the built-in default:
configs/fashion_mnist_adamw8bit.yaml). --set overrides any key, e.g.
--set optimizer.lr=3e-4 --set train.steps=200; --print-recipe prints the
validated recipe with every default and exits. Runs resume from the newest
checkpoint in checkpoint.dir; Ctrl-C saves a checkpoint and stops.
--generate and --merge train nothing: they load the run's newest weights
(checkpoint.dir/model.pt, else its newest checkpoint, else the recipe's
starting model, e.g. model.path with model.adapter) into the recipe's
language model. --generate prints continuations of the --prompt texts
(default: generate.prompts, with the generate.* settings); --merge writes
the model in Hugging Face layout to OUT_DIR (default checkpoint.dir/merged;
also --merge=OUT_DIR): config.json, model.safetensors with LoRA adapters
folded into the dequantized base, and the tokenizer files.
--nproc N trains with N processes on this machine (data parallel over
Gloo: each takes its share of every batch, train.batch_size stays the
global batch; distributed.zero shards the 8-bit optimizer states). A run
over several machines starts this program on each with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set, as torchrun does. Rank 0 alone prints
and writes the run's files.
--plot renders a metrics file as SVG (default: next to it, .svg).
--list-keys prints every recipe key with its type, default and meaning.
)";

struct Arguments {
  std::string recipe;
  std::vector<std::string> overrides;
  bool print_recipe = false;
  std::vector<std::string> plot;
  bool generate = false;
  std::vector<std::string> prompts;
  bool merge = false;
  std::string merge_dir;  // empty: the run's merged/
  int nproc = 0;          // --nproc: local ranks to launch (0: none given)
  std::vector<std::string> forwarded;  // the arguments without --nproc, for the ranks
};

bool is_recipe_file(const std::string& arg) {
  const std::string ext = std::filesystem::path(arg).extension().string();
  return ext == ".yaml" || ext == ".yml";
}

// The value of `name` given as "NAME VALUE" (advancing i past it) or
// "NAME=VALUE" at argv[i]; nullopt when argv[i] is another argument.
std::optional<std::string> option_value(const std::string& name, const char* what, int& i,
                                        int argc, char** argv) {
  const std::string arg = argv[i];
  if (arg.rfind(name + "=", 0) == 0) return arg.substr(name.size() + 1);
  if (arg != name) return std::nullopt;
  if (i + 1 >= argc) throw lowbit::config::RecipeError(name + " needs " + what);
  return std::string(argv[++i]);
}

// "lowbit-train", or "lowbit-train (rank R of N)" in a run of several processes, so that an
// error says which rank stopped.
std::string who() {
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  if (!rank || !world || std::string(world) == "1") return "lowbit-train";
  return std::string("lowbit-train (rank ") + rank + " of " + world + ")";
}

// One write of the whole line: the ranks and the launcher share one stderr, and a line
// written in pieces could be cut by another process's.
void report_error(const std::string& message) {
  std::cerr << (who() + ": " + message + "\n") << std::flush;
}

Arguments parse(int argc, char** argv) {
  Arguments a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (const auto n = option_value("--nproc", "a number of processes", i, argc, argv)) {
      char* end = nullptr;
      const long v = std::strtol(n->c_str(), &end, 10);
      if (n->empty() || *end != '\0' || v < 1 || v > 1024)
        throw lowbit::config::RecipeError("--nproc: '" + *n +
                                          "' is not a number of processes in [1, 1024]");
      a.nproc = int(v);
      continue;
    }
    const int first = i;
    if (const auto value = option_value("--set", "KEY=VALUE", i, argc, argv)) {
      a.overrides.push_back(*value);
    } else if (const auto prompt = option_value("--prompt", "TEXT", i, argc, argv)) {
      a.prompts.push_back(*prompt);
    } else if (arg == "--generate") {
      a.generate = true;
    } else if (arg == "--merge") {
      a.merge = true;
      // An optional OUT_DIR: the next argument unless it is an option or the recipe.
      if (i + 1 < argc && argv[i + 1][0] != '-' && !is_recipe_file(argv[i + 1]))
        a.merge_dir = argv[++i];
    } else if (arg.rfind("--merge=", 0) == 0) {
      a.merge = true;
      a.merge_dir = arg.substr(8);
    } else if (arg == "--print-recipe") {
      a.print_recipe = true;
    } else if (arg == "--plot") {
      for (++i; i < argc; ++i) a.plot.push_back(argv[i]);
      if (a.plot.empty() || a.plot.size() > 2) {
        throw lowbit::config::RecipeError("--plot takes METRICS.jsonl and optionally OUT.svg");
      }
    } else if (!arg.empty() && arg[0] == '-') {
      throw lowbit::config::RecipeError("unknown option '" + arg + "'\n" + kUsage);
    } else if (a.recipe.empty()) {
      a.recipe = arg;
    } else {
      throw lowbit::config::RecipeError("more than one recipe given: '" + a.recipe + "' and '" +
                                        arg + "'");
    }
    for (int k = first; k <= i && k < argc; ++k) a.forwarded.push_back(argv[k]);
  }
  if (!a.prompts.empty() && !a.generate)
    throw lowbit::config::RecipeError("--prompt goes with --generate");
  if ((a.generate || a.merge) && a.recipe.empty())
    throw lowbit::config::RecipeError(std::string(a.generate ? "--generate" : "--merge") +
                                      " needs the RECIPE.yaml of the run");
  if (a.generate && a.merge)
    throw lowbit::config::RecipeError("--generate and --merge are separate commands; give one");
  if (a.nproc > 0 && (a.generate || a.merge || a.print_recipe || !a.plot.empty()))
    throw lowbit::config::RecipeError("--nproc goes with training, not with --generate, --merge, "
                                      "--print-recipe or --plot");
  if (a.nproc > 0 && (std::getenv("RANK") || std::getenv("WORLD_SIZE")))
    throw lowbit::config::RecipeError(
        "--nproc launches the ranks itself, and RANK or WORLD_SIZE is set already: unset them, "
        "or start the ranks yourself without --nproc");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace lowbit;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--list-keys") {
      std::cout << config::schema_reference();
      return 0;
    }
  }
  // Before any matmul: OpenBLAS picks its kernels as it loads (kernels/blas_core.h).
  kernels::reload_with_wider_blas(argv);
  try {
    const Arguments args = parse(argc, argv);
    if (!args.plot.empty()) {
      const std::string svg =
          args.plot.size() == 2
              ? args.plot[1]
              : std::filesystem::path(args.plot[0]).replace_extension(".svg").string();
      train::write_plot(args.plot[0], svg, std::filesystem::path(args.plot[0]).stem().string());
      std::cout << "wrote " << svg << "\n";
      return 0;
    }
    const config::Recipe recipe =
        args.recipe.empty()
            ? config::load_recipe_text(lowbit_default_recipe(), "fashion_mnist_adamw8bit",
                                       "default recipe (configs/fashion_mnist_adamw8bit.yaml)",
                                       args.overrides)
            : config::load_recipe_file(args.recipe, args.overrides);
    if (args.print_recipe) {
      std::cout << config::to_yaml(recipe);
      return 0;
    }
    if (args.generate) {
      train::generate_from_run(recipe, args.prompts, std::cout);
      return 0;
    }
    if (args.merge) {
      train::merge_run(recipe, args.merge_dir, std::cout);
      return 0;
    }
    if (args.nproc > 1) return train::launch_local_ranks(args.nproc, args.forwarded, std::cerr);
    std::signal(SIGINT, on_interrupt);
    train::RunOptions options;
    options.ranks = train::Ranks::from_environment(
        std::chrono::seconds(recipe.distributed.timeout), recipe.device == "cuda");
    // Ranks other than 0 print nothing but their errors (on stderr).
    std::ostringstream quiet;
    if (options.ranks && options.ranks->rank() != 0) options.out = &quiet;
    options.terminal = ::isatty(STDOUT_FILENO) != 0 && options.out == &std::cout;
    options.stop = &stop_requested;
    return train::run_training(recipe, options).interrupted ? 130 : 0;
  } catch (const config::RecipeError& e) {
    report_error(e.what());
    return 2;
  } catch (const c10::Error& e) {
    report_error(e.msg());
    return 1;
  } catch (const std::exception& e) {
    report_error(e.what());
    return 1;
  }
}
