// Eigen vectorised for the instruction-set path of this translation unit
// (kernels/cpu/isa_region.h). Eigen picks its packet code from the compiler's
// ISA macros, which `#pragma GCC target` does not define in C++, so the path
// names the EIGEN_VECTORIZE_* switches itself, and Eigen is included inside the
// path's target region. Its namespace is renamed per path (lowbit_eigen_avx512
// ...): the templates instantiated here, built for the path's instructions,
// must never be merged at link time with the baseline Eigen of other code.
// The standard headers Eigen uses are included first, outside the region.
#pragma once

#include <algorithm>
#include <array>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iosfwd>
#include <iostream>
#include <limits>
#include <new>
#include <sstream>
#include <string>
#include <type_traits>

#include <omp.h>

#include "kernels/cpu/isa_region.h"
#include "kernels/cpu/simd_intrinsics.h"

#ifdef Eigen
#error "kernels/cpu/eigen_path.h must be the translation unit's only Eigen include"
#endif

#define EIGEN_DONT_PARALLELIZE  // threads come from the kernels' OpenMP loops
#if LOWBIT_CPU_AVX2
#define EIGEN_VECTORIZE_SSE3
#define EIGEN_VECTORIZE_SSSE3
#define EIGEN_VECTORIZE_SSE4_1
#define EIGEN_VECTORIZE_SSE4_2
#define EIGEN_VECTORIZE_AVX
#define EIGEN_VECTORIZE_AVX2
#define EIGEN_VECTORIZE_FMA
#endif
#if LOWBIT_CPU_AVX512
#define EIGEN_VECTORIZE_AVX512
#define EIGEN_VECTORIZE_AVX512DQ
#endif
// Eigen takes its buffers' alignment from the same macros (__AVX__,
// __AVX512F__), so without these it aligns them to 16 bytes while the path's
// packets store 32 or 64 bytes aligned: ThreadSanitizer's allocator turned
// that into a SEGV in gemm_pack_lhs on every run (scripts/tsan.sh).
#if LOWBIT_CPU_AVX512
#define EIGEN_MAX_ALIGN_BYTES 64
#define EIGEN_MAX_STATIC_ALIGN_BYTES 64
#elif LOWBIT_CPU_AVX2
#define EIGEN_MAX_ALIGN_BYTES 32
#define EIGEN_MAX_STATIC_ALIGN_BYTES 32
#endif

#define LOWBIT_CPU_EIGEN_NAME(ns) lowbit_eigen_##ns
#define LOWBIT_CPU_EIGEN(ns) LOWBIT_CPU_EIGEN_NAME(ns)
#define Eigen LOWBIT_CPU_EIGEN(LOWBIT_CPU_ISA_NS)

LOWBIT_CPU_TARGET_PUSH
#include <Eigen/Core>
LOWBIT_CPU_TARGET_POP
