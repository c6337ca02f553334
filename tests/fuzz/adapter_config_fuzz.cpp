// PEFT's adapter_config.json (lora/adapter_config.cpp), then its
// target_modules compiled and matched as load_adapter does
// (lora/module_paths.cpp).
#include "lora/adapter_config.h"
#include "lora/module_paths.h"
#include "quant/json_file.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = "adapter_config.json";
  lowbit::fuzz::expect_clean_refusal(path, [&] {
    const nlohmann::json j =
        lowbit::quant::parse_json(std::string(lowbit::fuzz::as_text(data, size)), path);
    const lowbit::lora::LoraConfig config = lowbit::lora::adapter_config_from_json(j, path);
    const lowbit::lora::PathPatterns targets(config.target_modules, path + " target_modules");
    (void)targets.matches("model.layers.0.self_attn.q_proj");
  });
  return 0;
}
