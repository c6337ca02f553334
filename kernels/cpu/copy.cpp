#include <algorithm>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"

namespace lowbit::kernels::cpu {

void copy(const uint8_t* src, uint8_t* dst, size_t bytes) {
  // 1 MiB pieces: large enough for memcpy's streaming path, many enough to
  // spread over the threads.
  constexpr size_t kPiece = size_t(1) << 20;
  const ptrdiff_t pieces = ptrdiff_t((bytes + kPiece - 1) / kPiece);
#pragma omp parallel for schedule(static)
  for (ptrdiff_t p = 0; p < pieces; ++p) {
    const size_t begin = size_t(p) * kPiece;
    std::memcpy(dst + begin, src + begin, std::min(kPiece, bytes - begin));
  }
}

}  // namespace lowbit::kernels::cpu
