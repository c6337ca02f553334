// <immintrin.h> for the CPU kernels' AVX2 / AVX-512 paths, included by every
// x86-64 build: the paths enable the instructions per region
// (kernels/cpu/isa_region.h), so the header must not depend on -m flags. GCC
// 12's AVX-512 intrinsics start from _mm512_undefined_*(), which
// -Wmaybe-uninitialized (or -Wuninitialized, as in _mm512_reduce_add_epi32)
// reports once inlined (GCC bug 105593, fixed in 13): the false positive is
// silenced for this header only. Include it before any other header that
// might pull <immintrin.h> in unguarded.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
