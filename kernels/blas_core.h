// Which kernels the process's OpenBLAS runs, and a way to give it wider ones.
//
// OpenBLAS, the BLAS that Debian's libtorch multiplies fp32 with once scripts/deps.sh has
// installed it, chooses its kernels when it is loaded, from the CPU's family and model numbers.
// A release older than the CPU does not know the model and falls back to its SSE3 kernels
// ("Prescott"): Debian 12's OpenBLAS 0.3.21 does so on Intel's Emerald Rapids Xeons, where the
// default recipe then trains about 3x slower (docs/PERFORMANCE.md, "OpenBLAS on a CPU it does
// not know"). OPENBLAS_CORETYPE, read as OpenBLAS loads, overrides the choice.
#pragma once

#include <string>

namespace lowbit::kernels {

struct BlasCore {
  std::string loaded;  // openblas_get_corename() of the process's OpenBLAS; empty: no OpenBLAS
  std::string wanted;  // wider kernels this CPU runs, where `loaded` has no AVX2; else empty
};

// The process's OpenBLAS, looked up among the loaded libraries (libtorch's BLAS dependency).
BlasCore blas_core();

// The same for an OpenBLAS that chose `loaded` on this CPU (wider_blas_core with the AVX2 and
// AVX-512 paths that cpu_isas() lists).
BlasCore blas_core_of(const std::string& loaded);

// OpenBLAS's name for the kernels to use instead of `loaded` on a CPU with AVX2 and FMA (and
// AVX-512): "" where `loaded` already has AVX2 kernels (Haswell, Zen, SkylakeX, Cooperlake,
// SapphireRapids) or the CPU has no AVX2; else "SkylakeX" with AVX-512, "Haswell" without.
std::string wider_blas_core(const std::string& loaded, bool avx2, bool avx512);

// For a program's main(), before any matmul: where blas_core().wanted is set and the user has
// not set OPENBLAS_CORETYPE, sets it, notes the replaced core in LOWBIT_BLAS_REPLACED, and
// executes the program again with the same arguments, so that OpenBLAS loads with the wider
// kernels. Returns where there is nothing to do, or where the exec failed (the run then goes on
// with the narrow kernels).
void reload_with_wider_blas(char** argv);

// One line for a program's header: "OpenBLAS 0.3.21 ..., SkylakeX kernels", with the replaced
// core where reload_with_wider_blas set them; "" without OpenBLAS.
std::string blas_description();

}  // namespace lowbit::kernels
