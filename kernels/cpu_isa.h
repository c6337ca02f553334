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
// hardware prefetchers (kernels/cpu/weight4bit_view.h):
// cpu_prefetch_weights_for(getenv("LOWBIT_CPU_PREFETCH")), decided at the
// first call.
bool cpu_prefetch_weights();

// What a LOWBIT_CPU_PREFETCH value selects: "1" on, "0" off; nullptr or ""
// the default, on for Intel CPUs (it made the gemvs 1.1-1.7x faster on the
// 16-core Xeon host) and off elsewhere (AMD: 5-13% slower on Zen 5). Throws
// for any other value.
bool cpu_prefetch_weights_for(const char* request);

}  // namespace lowbit::kernels
