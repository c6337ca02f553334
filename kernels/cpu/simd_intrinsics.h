// The intrinsics of the CPU kernels' vector paths: <immintrin.h> on x86-64,
// <arm_neon.h> on aarch64. Included by every build of the architecture: the
// x86 paths enable their instructions per region (kernels/cpu/isa_region.h),
// so the header must not depend on -m flags; NEON is aarch64's baseline. GCC
// 12's AVX-512 intrinsics start from _mm512_undefined_*(), which
// -Wmaybe-uninitialized (or -Wuninitialized, as in _mm512_reduce_add_epi32)
// reports once inlined (GCC bug 105593, fixed in 13): the false positive is
// silenced for this header only. Include it before any other header that
// might pull <immintrin.h> in unguarded.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC diagnostic push
#if !defined(__clang__)  // clang has no -Wmaybe-uninitialized (and warns about the name)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif
