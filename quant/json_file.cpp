#include "quant/json_file.h"

#include <fstream>
#include <iterator>

#include <c10/util/Exception.h>

namespace lowbit::quant {

nlohmann::json parse_json(const std::string& text, const std::string& what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, what, ": not valid JSON: ", e.what());
  }
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, path, ": cannot open");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TORCH_CHECK(!in.bad(), path, ": read failed");
  return parse_json(text, path);
}

}  // namespace lowbit::quant
