// PEFT's adapter_config.json as JSON <-> LoraConfig, without a model: what is
// written reads back, and malformed files are refused naming the file and key.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lora/adapter_config.h"
#include "tests/support/expect_error.h"

namespace lowbit::lora {
namespace {

using lowbit::testing::expect_error_all;
using nlohmann::json;

TEST(AdapterConfig, WhatIsWrittenReadsBack) {
  LoraConfig config;
  config.r = 4;
  config.lora_alpha = 12.5;
  config.lora_dropout = 0.1;
  config.use_rslora = true;
  config.target_modules = {"q_proj", "v_proj"};
  config.base_model_name_or_path = "tiny";
  const json j = adapter_config_to_json(config);
  EXPECT_EQ(j.at("target_modules"), json({"q_proj", "v_proj"}));  // plain names: PEFT's list
  const LoraConfig back = adapter_config_from_json(j, "adapter_config.json");
  EXPECT_EQ(back.r, 4);
  EXPECT_EQ(back.lora_alpha, 12.5);
  EXPECT_EQ(back.lora_dropout, 0.1);
  EXPECT_TRUE(back.use_rslora);
  EXPECT_EQ(back.target_modules, config.target_modules);
  EXPECT_EQ(back.base_model_name_or_path, "tiny");
  // A pattern that is not a plain name travels as PEFT's one regex.
  config.target_modules = {"blocks\\.0\\..*"};
  EXPECT_EQ(adapter_config_to_json(config).at("target_modules"), "(?:.*\\.)?(?:blocks\\.0\\..*)");
}

TEST(AdapterConfig, MalformedFilesAreRefusedNamingTheFileAndKey) {
  const json good = adapter_config_to_json([] {
    LoraConfig c;
    c.target_modules = {"fc1"};
    return c;
  }());
  auto refused = [&](const json& j, const std::string& problem) {
    expect_error_all([&] { adapter_config_from_json(j, "dir/adapter_config.json"); },
                     {"dir/adapter_config.json", problem});
  };
  refused(json::array(), "expected a JSON object");
  json j = good;
  j["peft_type"] = "IA3";
  refused(j, "peft_type is \"IA3\"");
  j = good;
  j["r"] = "8";
  refused(j, "'r' must be an integer");
  j = good;
  j["lora_dropout"] = "high";
  refused(j, "a field has the wrong type");
  j = good;
  j["target_modules"] = json::array();
  refused(j, "'target_modules' must be a non-empty list");
  j = good;
  j["target_modules"] = {"fc1", 3};
  refused(j, "'target_modules' entries must be strings");
  j = good;
  j["use_dora"] = true;
  refused(j, "'use_dora' is true; only false is supported");
  j = good;
  j["rank_pattern"] = {{"fc1", 4}};
  refused(j, "'rank_pattern' is {\"fc1\":4}; this option is not supported");
}

}  // namespace
}  // namespace lowbit::lora
