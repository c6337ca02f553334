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

// An OpenBLAS function of the process, or null: RTLD_DEFAULT searches the libraries loaded
// with the program (libtorch's libblas.so.3 is OpenBLAS where scripts/deps.sh installed it).
std::string call_openblas(const char* name) {
  using Fn = char* (*)();
  const auto fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
  const char* text = fn ? fn() : nullptr;
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.pop_back();
  return s;
}

}  // namespace

std::string wider_blas_core(const std::string& loaded, bool avx2, bool avx512) {
  // OpenBLAS's cores whose sgemm kernels use AVX2 and FMA or wider (its driver/others names).
  static constexpr std::array<const char*, 5> kWide = {"Haswell", "Zen", "SkylakeX", "Cooperlake",
                                                       "SapphireRapids"};
  if (!avx2 || loaded.empty()) return "";
  const auto same = [&](const char* name) {
    return std::equal(loaded.begin(), loaded.end(), name, name + std::char_traits<char>::length(name),
                      [](char a, char b) { return std::tolower(a) == std::tolower(b); });
  };
  if (std::any_of(kWide.begin(), kWide.end(), same)) return "";
  return avx512 ? "SkylakeX" : "Haswell";
}

BlasCore blas_core() {
  BlasCore c;
  c.loaded = call_openblas("openblas_get_corename");
  const std::vector<CpuIsa> isas = cpu_isas();
  const auto runs = [&](CpuIsa isa) { return std::find(isas.begin(), isas.end(), isa) != isas.end(); };
  c.wanted = wider_blas_core(c.loaded, runs(CpuIsa::Avx2), runs(CpuIsa::Avx512));
  return c;
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
  if (replaced && *replaced && set && *set)
    out += std::string(" (OPENBLAS_CORETYPE=") + set + ", set by lowbit: it had chosen " +
           replaced + ", which does not use this CPU's AVX2)";
  return out;
}

}  // namespace lowbit::kernels
