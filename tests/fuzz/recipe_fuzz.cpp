// lowbit-train's YAML recipes (examples/config/): YAML syntax, the schema's
// keys and types, and the cross-key rules.
#include "examples/config/recipe.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string what = "fuzz.yaml";
  lowbit::fuzz::expect_clean_refusal(what, [&] {
    lowbit::config::load_recipe_text(std::string(lowbit::fuzz::as_text(data, size)), "fuzz", what);
  });
  return 0;
}
