#include "text/sentencepiece/load_module.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "text/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define LOWBIT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOWBIT_SANITIZED 1
#endif
#endif
#ifndef LOWBIT_SANITIZED
#define LOWBIT_SANITIZED 0
#endif

namespace lowbit::text::sentencepiece_module {
namespace {

const Api* load_api(std::string& failures) {
#ifndef LOWBIT_SENTENCEPIECE_MODULE_PATHS
  failures = "lowbit was built without SentencePiece (install libsentencepiece-dev and pkg-config, "
             "then configure again)";
  return nullptr;
#elif LOWBIT_SANITIZED
  // ASan's runtime aborts the process on dlopen(RTLD_DEEPBIND)
  // (google/sanitizers#611), and without it the two protobufs clash.
  failures = "SentencePiece models cannot be loaded in a build with AddressSanitizer: its runtime "
             "refuses the RTLD_DEEPBIND that keeps SentencePiece's protobuf apart from libtorch's";
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
