#include "examples/train/finished_run.h"

#include <filesystem>

#include "examples/train/run_model.h"

namespace lowbit::train {
namespace {
namespace fs = std::filesystem;

// Checked before any data is read or model built.
void require_language_model(const config::Recipe& recipe, const std::string& option) {
  if (recipe.model.name != "hf_causal_lm" && recipe.model.name != "llama") {
    throw config::RecipeError(option + ": model.name " + recipe.model.name +
                              " is not a language model; it needs hf_causal_lm or llama");
  }
}

// The recipe's model with the run's newest weights; tells `out` which.
RunModel load_run(const config::Recipe& recipe, std::ostream& out) {
  RunModel built = make_run_model(recipe);
  const std::string weights = load_newest_weights(recipe, built);
  out << "model: " << recipe.model.name << ", " << built.prepared.description << "\n  weights: "
      << (weights.empty() ? "the recipe's starting model (" + recipe.checkpoint.dir +
                                " holds no model.pt or checkpoint of a run)"
                          : weights)
      << "\n";
  out.flush();
  return built;
}

}  // namespace

void generate_from_run(const config::Recipe& recipe, const std::vector<std::string>& prompts,
                       std::ostream& out) {
  require_language_model(recipe, "--generate");
  const std::vector<std::string>& chosen = prompts.empty() ? recipe.generate.prompts : prompts;
  if (chosen.empty()) {
    throw config::RecipeError(
        "--generate: no prompts; pass --prompt TEXT or set generate.prompts in the recipe");
  }
  RunModel built = load_run(recipe, out);
  const std::vector<std::string> samples = built.task->continue_prompts(chosen);
  for (size_t i = 0; i < samples.size(); ++i)
    out << "[" << chosen[i] << "] -> " << samples[i] << "\n";
  out.flush();
}

std::string merge_run(const config::Recipe& recipe, const std::string& out_dir, std::ostream& out) {
  const std::string dir =
      out_dir.empty() ? (fs::path(recipe.checkpoint.dir) / "merged").string() : out_dir;
  require_language_model(recipe, "--merge");
  RunModel built = load_run(recipe, out);
  built.task->save_hf(dir);
  out << "wrote " << dir << " (Hugging Face layout"
      << (built.prepared.adapters ? ", LoRA adapters merged into the base" : "") << ")\n";
  out.flush();
  return dir;
}

}  // namespace lowbit::train
