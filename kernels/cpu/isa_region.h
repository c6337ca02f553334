// The instruction-set region of a CPU kernel source. kernels/CMakeLists.txt
// compiles each hot kernel source once per path, defining LOWBIT_CPU_ISA_AVX2
// or LOWBIT_CPU_ISA_AVX512 on x86-64, LOWBIT_CPU_ISA_NEON on aarch64 (none:
// the generic path, portable C++ for the architecture's baseline). Code between
// LOWBIT_CPU_ISA_BEGIN and LOWBIT_CPU_ISA_END lands in an inline namespace of
// the path (cpu::avx512::..., so the copies never meet at link time) and is
// compiled for the path's instructions by `#pragma GCC target`, not by -m
// flags: headers included before the region (the standard library, the
// kernels contract) stay baseline code, so no inline function or template
// instantiation built for AVX-512 can be merged into the generic path's calls.
// Includes therefore go above the region, never inside it. In C++ the pragma
// does not define __AVX2__ and friends, hence LOWBIT_CPU_AVX2/AVX512 for #if.
// NEON is in every aarch64 CPU's baseline, so its path has no pragma; its code
// is behind LOWBIT_CPU_NEON, never __ARM_NEON (which the generic path sees too).
#pragma once

#include "kernels/cpu_isa.h"

// Clang ignores `#pragma GCC target` (with a warning) and compiles the region
// for the baseline, which then fails on the intrinsics; its equivalent gives
// every function of the region the target attribute. The sanitizer and fuzz
// builds (scripts/sanitize.sh, scripts/fuzz.sh) use clang.
#define LOWBIT_CPU_PRAGMA(text) _Pragma(#text)
#if defined(__clang__)
#define LOWBIT_CPU_TARGET_PRAGMA(features) \
  LOWBIT_CPU_PRAGMA(clang attribute push(__attribute__((target(features))), apply_to = function))
#define LOWBIT_CPU_TARGET_POP_PRAGMA _Pragma("clang attribute pop")
#else
#define LOWBIT_CPU_TARGET_PRAGMA(features) \
  _Pragma("GCC push_options") LOWBIT_CPU_PRAGMA(GCC target(features))
#define LOWBIT_CPU_TARGET_POP_PRAGMA _Pragma("GCC pop_options")
#endif

#if defined(LOWBIT_CPU_ISA_AVX512)
// x86-64-v4 plus VNNI (int8 dot products) and VBMI (byte permutes of the 8-bit
// decoder): Ice Lake, Sapphire Rapids, Zen 4 and later.
#define LOWBIT_CPU_AVX512 1
#define LOWBIT_CPU_AVX2 1
#define LOWBIT_CPU_NEON 0
#define LOWBIT_CPU_ISA_NS avx512
#define LOWBIT_CPU_ISA_ENUM ::lowbit::kernels::CpuIsa::Avx512
// (_Pragma takes one string literal: the list cannot be split.)
#define LOWBIT_CPU_TARGET_PUSH \
  LOWBIT_CPU_TARGET_PRAGMA("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx512vnni,avx512vbmi")
#define LOWBIT_CPU_TARGET_POP LOWBIT_CPU_TARGET_POP_PRAGMA
#elif defined(LOWBIT_CPU_ISA_AVX2)
// x86-64-v3: Haswell, Zen 1 and later.
#define LOWBIT_CPU_AVX512 0
#define LOWBIT_CPU_AVX2 1
#define LOWBIT_CPU_NEON 0
#define LOWBIT_CPU_ISA_NS avx2
#define LOWBIT_CPU_ISA_ENUM ::lowbit::kernels::CpuIsa::Avx2
#define LOWBIT_CPU_TARGET_PUSH LOWBIT_CPU_TARGET_PRAGMA("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#define LOWBIT_CPU_TARGET_POP LOWBIT_CPU_TARGET_POP_PRAGMA
#elif defined(LOWBIT_CPU_ISA_NEON)
// AArch64 Advanced SIMD (128-bit): baseline, nothing to enable.
#define LOWBIT_CPU_AVX512 0
#define LOWBIT_CPU_AVX2 0
#define LOWBIT_CPU_NEON 1
#define LOWBIT_CPU_ISA_NS neon
#define LOWBIT_CPU_ISA_ENUM ::lowbit::kernels::CpuIsa::Neon
#define LOWBIT_CPU_TARGET_PUSH
#define LOWBIT_CPU_TARGET_POP
#else
#define LOWBIT_CPU_AVX512 0
#define LOWBIT_CPU_AVX2 0
#define LOWBIT_CPU_NEON 0
#define LOWBIT_CPU_ISA_NS generic
#define LOWBIT_CPU_ISA_ENUM ::lowbit::kernels::CpuIsa::Generic
#define LOWBIT_CPU_TARGET_PUSH
#define LOWBIT_CPU_TARGET_POP
#endif

// The pragmas come last in BEGIN and END: GCC 14 drops whatever follows
// `_Pragma("GCC target(...)")` in the same macro expansion (GCC 12 and 13 keep
// it), which would lose the namespaces.
#define LOWBIT_CPU_ISA_BEGIN \
  namespace lowbit::kernels::cpu { inline namespace LOWBIT_CPU_ISA_NS { LOWBIT_CPU_TARGET_PUSH
#define LOWBIT_CPU_ISA_END \
  }                        \
  }                        \
  LOWBIT_CPU_TARGET_POP
