#include "examples/train/prepare_model.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "lora/peft_io.h"
#include "lora/quantize_model.h"
#include "quant/codebook.h"

namespace lowbit::train {
namespace {

torch::ScalarType dtype_of(const std::string& name) {
  if (name == "fp16") return torch::kFloat16;
  if (name == "bf16") return torch::kBFloat16;
  TORCH_CHECK(name == "fp32", "dtype '", name, "' is unknown; expected fp16, bf16 or fp32");
  return torch::kFloat32;
}

// Throws unless the recipe's lora section describes the adapter in
// `adapter_dir` (what the PEFT file fixes: rank, scaling and the layers).
void check_same_adapter(const config::LoraRecipe& lora, const lora::LoraConfig& file,
                        const std::string& adapter_dir) {
  const std::string where =
      (std::filesystem::path(adapter_dir) / "adapter_config.json").string() + ": ";
  const std::string fix =
      "; make the recipe's lora section match model.adapter, or leave the section out to take "
      "the adapter's settings";
  auto mismatch = [&](const std::string& key, const std::string& theirs,
                      const std::string& recipe_key, const std::string& ours) {
    throw config::RecipeError(where + key + " is " + theirs + " but the recipe's " + recipe_key +
                              " is " + ours + fix);
  };
  auto list = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    std::string s;
    for (const std::string& e : v) s += (s.empty() ? "" : ", ") + e;
    return "[" + s + "]";
  };
  auto number = [](double x) {
    std::ostringstream os;
    os << x;
    return os.str();
  };
  if (file.r != lora.r) mismatch("r", std::to_string(file.r), "lora.r", std::to_string(lora.r));
  if (file.lora_alpha != lora.alpha)
    mismatch("lora_alpha", number(file.lora_alpha), "lora.alpha", number(lora.alpha));
  if (file.use_rslora != lora.rslora)
    mismatch("use_rslora", file.use_rslora ? "true" : "false", "lora.rslora",
             lora.rslora ? "true" : "false");
  if (list(file.target_modules) != list(lora.target))
    mismatch("target_modules", list(file.target_modules), "lora.target", list(lora.target));
}

}  // namespace

lora::Linear4bitOptions linear4bit_options(const config::QuantRecipe& quant,
                                           const std::shared_ptr<kernels::Backend>& backend) {
  return lora::Linear4bitOptions()
      .format(quant.type == "fp4" ? quant::Format::FP4 : quant::Format::NF4)  // or int8: unused
      .blocksize(quant.block_size)
      .double_quant(quant.double_quant)
      .compute_dtype(dtype_of(quant.compute_dtype))
      .backend(backend);
}

lora::Linear8bitOptions int8_options(const config::QuantRecipe& quant,
                                     const std::shared_ptr<kernels::Backend>& backend) {
  return lora::Linear8bitOptions().threshold(quant.threshold).backend(backend);
}

PreparedModel prepare_model(torch::nn::Module& model, const config::QuantRecipe& quant,
                            const config::LoraRecipe& lora,
                            const std::shared_ptr<kernels::Backend>& backend,
                            const std::string& quantized_on_load,
                            const std::string& adapter_dir) {
  PreparedModel prepared;
  std::ostringstream d;
  const torch::ScalarType compute = dtype_of(quant.compute_dtype);
  if (quant.enabled && !quantized_on_load.empty()) {
    d << "\n    quant: " << quantized_on_load;
  } else if (quant.enabled) {
    lora::QuantizeConfig q;
    q.modules_to_not_convert = quant.skip;
    q.format = lora::parse_linear_format(quant.type);  // the schema allows nf4, fp4, int8
    for (const std::string& entry : quant.overrides) {
      const auto split = config::split_override(entry);  // checked with the recipe
      q.overrides.push_back({split->first, lora::parse_linear_format(split->second)});
    }
    q.four_bit = linear4bit_options(quant, backend);
    q.int8 = int8_options(quant, backend);
    const lora::QuantizeReport report = lora::quantize_model(model, q);
    d << "\n    quant: " << report.to_string();
    prepared.quantization_table = report.to_table();
  }
  if (!adapter_dir.empty() && !lora.enabled) {
    prepared.trainable = lora::load_adapter(model, adapter_dir);
    prepared.adapters = lora::load_adapter_config(adapter_dir);
    prepared.adapters->dtype = prepared.trainable.front().scalar_type();
    d << "\n    lora: PEFT adapter " << adapter_dir << " (r " << prepared.adapters->r << ", alpha "
      << prepared.adapters->lora_alpha << ", " << lora::lora_layers(model).size()
      << " adapted layers, " << prepared.adapters->dtype << ")";
  } else if (lora.enabled) {
    if (!adapter_dir.empty())
      check_same_adapter(lora, lora::load_adapter_config(adapter_dir), adapter_dir);
    lora::LoraConfig c;
    c.r = lora.r;
    c.lora_alpha = lora.alpha;
    c.lora_dropout = lora.dropout;
    c.use_rslora = lora.rslora;
    c.target_modules = lora.target;
    c.dtype = dtype_of(lora.dtype);
    c.compute_dtype = compute;
    prepared.trainable = lora::apply_lora(model, c);
    prepared.adapters = c;
    d << "\n    lora: r " << c.r << ", alpha " << c.lora_alpha << ", "
      << lora::lora_layers(model).size() << " adapted layers, " << lora.dtype << " adapters";
    if (!adapter_dir.empty()) {
      lora::load_adapter_weights(model, adapter_dir);
      d << " loaded from the PEFT adapter " << adapter_dir;
    }
  } else {
    for (const torch::Tensor& p : model.parameters()) {
      if (p.requires_grad()) prepared.trainable.push_back(p);
    }
  }
  int64_t trainable = 0;
  const auto named = model.named_parameters();
  for (const torch::Tensor& p : prepared.trainable) {
    trainable += p.numel();
    for (const auto& item : named) {
      if (item.value().is_same(p)) prepared.trainable_names.push_back(item.key());
    }
  }
  TORCH_CHECK(trainable > 0, "the model has no trainable parameters after quant/lora preparation");
  // Logical parameters: a 4-bit weight counts out * in however it is stored.
  const lora::ModelSize size = lora::model_size(model);
  prepared.description = std::to_string(size.params) + " parameters (" +
                         std::to_string(size.bytes) + " bytes), " + std::to_string(trainable) +
                         " trainable" + d.str();
  return prepared;
}

}  // namespace lowbit::train
