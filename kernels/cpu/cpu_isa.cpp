// Picks the CPU kernels' instruction-set path once per process (see
// kernels/cpu_isa.h): the paths built (LOWBIT_CPU_X86_PATHS: the AVX2 and
// AVX-512 ones; LOWBIT_CPU_NEON_PATH: NEON), filtered by what the CPU and the
// OS support.
#include "kernels/cpu_isa.h"

#include <cstdlib>
#include <string>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/error.h"

namespace lowbit::kernels {
namespace cpu {
#if LOWBIT_CPU_X86_PATHS
inline namespace avx2 {
const IsaKernels& path_kernels();
}
inline namespace avx512 {
const IsaKernels& path_kernels();
}
#endif
#if LOWBIT_CPU_NEON_PATH
inline namespace neon {
const IsaKernels& path_kernels();
}
#endif

const char* int8_core_name(Int8Core core) {
  switch (core) {
    case Int8Core::Ref: return "scalar";
    case Int8Core::Avx2: return "avx2";
    case Int8Core::Vnni: return "avx512-vnni";
  }
  return "unknown";
}

const IsaKernels& isa_kernels(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Generic: return generic::path_kernels();
#if LOWBIT_CPU_X86_PATHS
    case CpuIsa::Avx2: return avx2::path_kernels();
    case CpuIsa::Avx512: return avx512::path_kernels();
#endif
#if LOWBIT_CPU_NEON_PATH
    case CpuIsa::Neon: return neon::path_kernels();
#endif
    default: break;
  }
  fail("lowbit: the ", cpu_isa_name(isa), " CPU path is not built");
}

const IsaKernels& active_kernels() {
  static const IsaKernels& table = isa_kernels(cpu_isa());
  return table;
}

}  // namespace cpu

namespace {

// Whether this CPU (and the OS, which must save the wider registers: libgcc's
// checks read XCR0) runs the instructions the path is compiled with
// (kernels/cpu/isa_region.h).
bool cpu_runs(CpuIsa isa) {
#if LOWBIT_CPU_X86_PATHS
  __builtin_cpu_init();
#if defined(__clang__) && __clang_major__ < 16
  // Older clang (the sanitizer builds use Debian's clang 14) does not know
  // "f16c" here; every CPU with AVX2 and FMA (Haswell, Zen 1 on) has it.
  const bool f16c = true;
#else
  const bool f16c = __builtin_cpu_supports("f16c");
#endif
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c &&
                    __builtin_cpu_supports("bmi") &&
                    __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
  switch (isa) {
    case CpuIsa::Generic: return true;
    case CpuIsa::Avx2: return avx2;
    case CpuIsa::Avx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512vnni") &&
             __builtin_cpu_supports("avx512vbmi");
    case CpuIsa::Neon: return false;
  }
  return false;
#elif LOWBIT_CPU_NEON_PATH
  // Advanced SIMD is mandatory in AArch64: every CPU runs the NEON path.
  return isa == CpuIsa::Generic || isa == CpuIsa::Neon;
#else
  return isa == CpuIsa::Generic;
#endif
}

constexpr CpuIsa kAll[] = {CpuIsa::Generic, CpuIsa::Avx2, CpuIsa::Avx512, CpuIsa::Neon};

// Whether a CPU that runs `isa` runs `lower` too: the generic path, or a
// path of the same architecture that comes no later.
bool includes(CpuIsa isa, CpuIsa lower) {
  if (lower == CpuIsa::Generic) return true;
  const bool x86 = isa == CpuIsa::Avx2 || isa == CpuIsa::Avx512;
  const bool lower_x86 = lower == CpuIsa::Avx2 || lower == CpuIsa::Avx512;
  return x86 == lower_x86 && int(lower) <= int(isa);
}

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Generic: return "generic";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
    case CpuIsa::Neon: return "neon";
  }
  return "unknown";
}

std::vector<CpuIsa> cpu_isas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : kAll)
    if (cpu_runs(isa)) out.push_back(isa);
  return out;
}

CpuIsa cpu_isa_for(const char* request) {
  const std::vector<CpuIsa> runnable = cpu_isas();
  if (request == nullptr || *request == '\0') return runnable.back();
  const std::string want(request);
  for (CpuIsa isa : kAll) {
    if (want != cpu_isa_name(isa)) continue;
    CpuIsa chosen = CpuIsa::Generic;
    for (CpuIsa r : runnable)
      if (includes(isa, r)) chosen = r;
    return chosen;
  }
  fail("lowbit: LOWBIT_CPU_ISA=", want,
       " names no CPU kernel path: use avx512, avx2, neon or generic (or unset it for the best "
       "this CPU runs)");
}

CpuIsa cpu_isa() {
  static const CpuIsa isa = cpu_isa_for(std::getenv("LOWBIT_CPU_ISA"));
  return isa;
}

bool cpu_prefetch_weights_for(const char* request) {
  if (request == nullptr || *request == '\0') {
#if LOWBIT_CPU_X86_PATHS
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") != 0;
#else
    return false;
#endif
  }
  const std::string want(request);
  if (want != "1" && want != "0")
    fail("lowbit: LOWBIT_CPU_PREFETCH=", want, " must be 1 or 0 (or unset it for the default)");
  return want == "1";
}

bool cpu_prefetch_weights() {
  static const bool ahead = cpu_prefetch_weights_for(std::getenv("LOWBIT_CPU_PREFETCH"));
  return ahead;
}

}  // namespace lowbit::kernels
