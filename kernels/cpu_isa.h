// Which instruction-set path the CPU kernels run. The hot CPU kernels are
// built once per path (x86-64: generic, AVX2+FMA, AVX-512; aarch64: generic,
// NEON) and one is chosen at the first call: the best this CPU supports, or
// the environment's LOWBIT_CPU_ISA=avx512|avx2|neon|generic (clamped to what
// the CPU supports; a path of the other architecture selects generic).
#pragma once

#include <vector>

namespace lowbit::kernels {

// Ordered within each architecture: a later path runs everything an earlier
// one of the same architecture needs.
enum class CpuIsa { Generic, Avx2, Avx512, Neon };

// "generic", "avx2", "avx512" or "neon".
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

// Whether the 4-bit gemvs ask for their packed weight's lines ahead of the
// hardware prefetchers (kernels/cpu/weight4bit_view.h): on Intel CPUs, where
// it made them 1.3-2.1x faster on the 16-core Xeon host, and not on AMD's,
// where it cost 5-13% on Zen 5. LOWBIT_CPU_PREFETCH=1 or 0 overrides the
// choice; decided at the first call.
bool cpu_prefetch_weights();

}  // namespace lowbit::kernels
