// Which instruction-set path the CPU kernels run. The hot CPU kernels are
// built once per path (generic x86-64, AVX2+FMA, AVX-512) and one is chosen at
// the first call: the best this CPU supports, or the environment's
// LOWBIT_CPU_ISA=avx512|avx2|generic (clamped to what the CPU supports).
#pragma once

#include <vector>

namespace lowbit::kernels {

enum class CpuIsa { Generic, Avx2, Avx512 };

// "generic", "avx2" or "avx512".
const char* cpu_isa_name(CpuIsa isa);

// The paths this build and this CPU can run, Generic first.
std::vector<CpuIsa> cpu_isas();

// The path the CPU kernels run: cpu_isa_for(getenv("LOWBIT_CPU_ISA")),
// decided at the first call.
CpuIsa cpu_isa();

// The path a LOWBIT_CPU_ISA value selects on this CPU: the best runnable path
// at or below the one it names; nullptr or "" selects the best. Throws for a
// value that names no path.
CpuIsa cpu_isa_for(const char* request);

}  // namespace lowbit::kernels
