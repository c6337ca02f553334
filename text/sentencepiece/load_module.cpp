#include "text/sentencepiece/load_module.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "text/error.h"

namespace lowbit::text::sentencepiece_module {
namespace {

const Api* load_api(std::string& failures) {
#ifndef LOWBIT_SENTENCEPIECE_MODULE_PATHS
  failures = "lowbit was built without SentencePiece (install libsentencepiece-dev and pkg-config, "
             "then configure again)";
  return nullptr;
#else
  std::vector<std::string> paths = {LOWBIT_SENTENCEPIECE_MODULE_PATHS};
  if (const char* chosen = std::getenv("LOWBIT_SENTENCEPIECE_MODULE")) paths.insert(paths.begin(), chosen);
  for (const std::string& path : paths) {
    // Local and deep-bound: SentencePiece's protobuf stays private to it.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      failures += "\n  " + path + ": " + dlerror();
      continue;
    }
    using Entry = const Api* (*)();
    if (const auto entry = reinterpret_cast<Entry>(dlsym(handle, "lowbit_sentencepiece_api"))) return entry();
    failures += "\n  " + path + ": has no lowbit_sentencepiece_api";
  }
  failures = "cannot load the SentencePiece module liblowbit_sentencepiece (set LOWBIT_SENTENCEPIECE_MODULE "
             "to its path); tried:" + failures;
  return nullptr;
#endif
}

}  // namespace

const Api& api() {
  static std::once_flag once;
  static const Api* loaded = nullptr;
  static std::string failures;
  std::call_once(once, [] { loaded = load_api(failures); });
  if (loaded == nullptr) throw_error(failures);
  return *loaded;
}

}  // namespace lowbit::text::sentencepiece_module
