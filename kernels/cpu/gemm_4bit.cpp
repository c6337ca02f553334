// y = x W^T and dx = dy W for many tokens: compute-bound, so W is decoded one
// tile at a time into float32 (kTileOut x kTileIn = 128 KiB, which stays in
// L2 while it is used) and each tile is multiplied by Eigen's blocked GEMM.
// Threads own disjoint output columns (y: a range of output features; dx: a
// range of input features), so no result is shared between threads; tiles
// are handed out as threads free up.
#include "kernels/cpu/matmul_4bit.h"  // first: its immintrin.h include is guarded (GCC bug 105593)

#include <vector>

#include "kernels/cpu/eigen_path.h"
#include "kernels/cpu/element_io.h"

LOWBIT_CPU_ISA_BEGIN
namespace {

constexpr size_t kTileOut = 128;
constexpr size_t kTileIn = 256;

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;
using ConstView = Eigen::Map<const Matrix, Eigen::Unaligned, Stride>;
using View = Eigen::Map<Matrix, Eigen::Unaligned, Stride>;

// Dequantized W[o0, o0 + rows) x [k0, k0 + cols) into tile (row-major, leading
// dimension kTileIn).
void decode_tile(const Weight4bitView& w, size_t o0, size_t rows, size_t k0, size_t cols,
                 float* tile) {
  for (size_t r = 0; r < rows; ++r)
    decode_run(w, (o0 + r) * w.in_features + k0, cols, tile + r * kTileIn);
}

// A float32 view of an [m, n] activation: the buffer itself for float32,
// otherwise a converted copy held in `scratch`.
template <typename T>
const float* as_float(const typename T::Storage* a, size_t count, std::vector<float>& scratch) {
  if constexpr (std::is_same_v<typename T::Storage, float>) {
    return a;
  } else {
    scratch.resize(count);
    float* s = scratch.data();
    const ptrdiff_t n = ptrdiff_t(count);
#pragma omp parallel for schedule(static)
    for (ptrdiff_t i = 0; i < n; ++i) s[i] = T::load(a[i]);
    return s;
  }
}

template <typename T>
void gemm_tiled(const typename T::Storage* x_in, size_t m, const Weight4bitView& w,
                const typename T::Storage* bias, typename T::Storage* y) {
  const size_t in = w.in_features, out = w.out_features;
  std::vector<float> x_scratch;
  const float* x = as_float<T>(x_in, m * in, x_scratch);
  const ptrdiff_t tiles = ptrdiff_t((out + kTileOut - 1) / kTileOut);
#pragma omp parallel
  {
    std::vector<float> tile(kTileOut * kTileIn);
    std::vector<float> acc(m * kTileOut);
#pragma omp for schedule(dynamic, 1)
    for (ptrdiff_t t = 0; t < tiles; ++t) {
      const size_t o0 = size_t(t) * kTileOut, rows = std::min(kTileOut, out - o0);
      View acc_view(acc.data(), Eigen::Index(m), Eigen::Index(rows), Stride(kTileOut));
      acc_view.setZero();
      for (size_t k0 = 0; k0 < in; k0 += kTileIn) {
        const size_t cols = std::min(kTileIn, in - k0);
        decode_tile(w, o0, rows, k0, cols, tile.data());
        const ConstView xk(x + k0, Eigen::Index(m), Eigen::Index(cols), Stride(Eigen::Index(in)));
        const ConstView wk(tile.data(), Eigen::Index(rows), Eigen::Index(cols), Stride(kTileIn));
        acc_view.noalias() += xk * wk.transpose();
      }
      for (size_t r = 0; r < m; ++r)
        for (size_t j = 0; j < rows; ++j) {
          float v = acc[r * kTileOut + j];
          if (bias) v += T::load(bias[o0 + j]);
          y[r * out + o0 + j] = T::store(v);
        }
    }
  }
}

template <typename T>
void input_grad_tiled(const typename T::Storage* dy_in, size_t m, const Weight4bitView& w,
                      typename T::Storage* dx) {
  const size_t in = w.in_features, out = w.out_features;
  std::vector<float> dy_scratch;
  const float* dy = as_float<T>(dy_in, m * out, dy_scratch);
  const ptrdiff_t tiles = ptrdiff_t((in + kTileIn - 1) / kTileIn);
#pragma omp parallel
  {
    std::vector<float> tile(kTileOut * kTileIn);
    std::vector<float> acc(m * kTileIn);
#pragma omp for schedule(dynamic, 1)
    for (ptrdiff_t t = 0; t < tiles; ++t) {
      const size_t k0 = size_t(t) * kTileIn, cols = std::min(kTileIn, in - k0);
      View acc_view(acc.data(), Eigen::Index(m), Eigen::Index(cols), Stride(kTileIn));
      acc_view.setZero();
      for (size_t o0 = 0; o0 < out; o0 += kTileOut) {
        const size_t rows = std::min(kTileOut, out - o0);
        decode_tile(w, o0, rows, k0, cols, tile.data());
        const ConstView dyk(dy + o0, Eigen::Index(m), Eigen::Index(rows), Stride(Eigen::Index(out)));
        const ConstView wk(tile.data(), Eigen::Index(rows), Eigen::Index(cols), Stride(kTileIn));
        acc_view.noalias() += dyk * wk;
      }
      for (size_t r = 0; r < m; ++r)
        for (size_t j = 0; j < cols; ++j) dx[r * in + k0 + j] = T::store(acc[r * kTileIn + j]);
    }
  }
}

}  // namespace

void gemm_4bit(const void* x, size_t m, const Weight4bitView& w, const void* bias, void* y,
               DType dtype) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    using S = typename T::Storage;
    gemm_tiled<T>(static_cast<const S*>(x), m, w, static_cast<const S*>(bias), static_cast<S*>(y));
  });
}

void gemm_4bit_input_grad(const void* dy, size_t m, const Weight4bitView& w, void* dx,
                          DType dtype) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    using S = typename T::Storage;
    input_grad_tiled<T>(static_cast<const S*>(dy), m, w, static_cast<S*>(dx));
  });
}

LOWBIT_CPU_ISA_END
