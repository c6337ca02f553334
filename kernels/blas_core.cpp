#include "kernels/blas_core.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <vector>

#include "kernels/cpu_isa.h"

namespace lowbit::kernels {
namespace {

// What an OpenBLAS function of the process returns; "" where the process has no OpenBLAS.
// RTLD_DEFAULT searches the libraries loaded with the program (libtorch's libblas.so.3 is
// OpenBLAS where scripts/deps.sh installed it).
std::string call_openblas(const char* name) {
  using Fn = char* (*)();
  const auto fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
  const char* text = fn ? fn() : nullptr;
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.pop_back();
  return s;
}

bool same_name(const std::string& a, const std::string& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](unsigned char x, unsigned char y) {
    return std::tolower(x) == std::tolower(y);
  });
}

}  // namespace

std::string wider_blas_core(const std::string& loaded, bool avx2, bool avx512) {
  // OpenBLAS's cores whose sgemm kernels use AVX2 and FMA or wider, as openblas_get_corename
  // names them.
  static constexpr std::array<const char*, 5> kWide = {"Haswell", "Zen", "SkylakeX", "Cooperlake",
                                                       "SapphireRapids"};
  if (!avx2 || loaded.empty()) return "";
  if (std::any_of(kWide.begin(), kWide.end(),
                  [&](const char* name) { return same_name(loaded, name); }))
    return "";
  return avx512 ? "SkylakeX" : "Haswell";
}

BlasCore blas_core() { return blas_core_of(call_openblas("openblas_get_corename")); }

BlasCore blas_core_of(const std::string& loaded) {
  const std::vector<CpuIsa> isas = cpu_isas();
  const auto runs = [&](CpuIsa isa) { return std::find(isas.begin(), isas.end(), isa) != isas.end(); };
  return {loaded, wider_blas_core(loaded, runs(CpuIsa::Avx2), runs(CpuIsa::Avx512))};
}

void reload_with_wider_blas(char** argv) {
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  if (set && *set) return;  // the user's choice, or ours after the exec
  const BlasCore c = blas_core();
  if (c.wanted.empty()) return;
  setenv("OPENBLAS_CORETYPE", c.wanted.c_str(), 1);
  setenv("LOWBIT_BLAS_REPLACED", c.loaded.c_str(), 1);
  execv("/proc/self/exe", argv);
  // The exec failed: go on as loaded, and say nothing was replaced.
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv("LOWBIT_BLAS_REPLACED");
}

std::string blas_description() {
  const std::string config = call_openblas("openblas_get_config");
  const std::string core = call_openblas("openblas_get_corename");
  if (core.empty()) return "";
  // openblas_get_config: "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64";
  // its version is the second word.
  std::string out = config.rfind("OpenBLAS ", 0) == 0
                        ? config.substr(0, config.find(' ', 9))
                        : std::string("OpenBLAS");
  out += ", " + core + " kernels";
  const char* replaced = std::getenv("LOWBIT_BLAS_REPLACED");
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  if (replaced && *replaced && set && *set) {
    // An OpenBLAS built for one target (no DYNAMIC_ARCH) ignores the variable.
    out += same_name(core, set) ? std::string(" (OPENBLAS_CORETYPE=") + set +
                                      ", set by lowbit: it had chosen " + replaced +
                                      ", which does not use this CPU's AVX2)"
                                : std::string(" (OPENBLAS_CORETYPE=") + set +
                                      ", set by lowbit, was not taken: this OpenBLAS is "
                                      "built for one target)";
  }
  return out;
}

}  // namespace lowbit::kernels
