// LLM.int8()'s int8 matmul on the CPU (Dettmers et al. 2022, "LLM.int8():
// 8-bit Matrix Multiplication for Transformers at Scale", vector-wise
// quantization): y = (x_codes W_codes^T) * absmax_x * SCB / 127^2.
//
// W stays in bitsandbytes' row-major layout, so each output is a dot product
// of two contiguous byte rows. A tile of MR rows of x by NR rows of W keeps
// MR x NR vector accumulators; each step loads MR + NR vectors and issues
// MR x NR multiply-adds, and the lanes are summed once at the end. Threads
// take blocks of kBlockOut rows of W (256 KiB at 4096 inputs, which stays in
// L2 while every row of x passes over it), so W is read from memory once.
#include "kernels/cpu/simd_intrinsics.h"  // first: GCC bug 105593 guard

#include "kernels/cpu/matmul_int8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/backend.h"
#include "kernels/cpu/element_io.h"

LOWBIT_CPU_ISA_BEGIN
namespace {

constexpr size_t kBlockOut = 64;

// ---- the integer cores ----

// acc(i, j) = sum_k x[i, k] w[j, k] of one row pair, in int32.
int32_t dot_ref(const int8_t* x, const int8_t* w, size_t k) {
  int32_t s = 0;
  for (size_t i = 0; i < k; ++i) s += int32_t(x[i]) * int32_t(w[i]);
  return s;
}

#if LOWBIT_CPU_AVX2
// Bytes sign-extended to int16, multiplied and summed in pairs into int32
// (vpmaddwd: |products| <= 2 * 127 * 128, no saturation). 16 inputs a step;
// 2 x 4 tiles use 8 accumulators of AVX2's 16 registers.
struct Avx2Core {
  static constexpr int kRows = 2, kCols = 4;
  static constexpr size_t kStep = 16;
  static constexpr bool kShifted = false;
  using Vec = __m256i;
  static Vec zero() { return _mm256_setzero_si256(); }
  static Vec load(const int8_t* p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static Vec load_part(const int8_t* p, size_t n) {
    alignas(16) int8_t buf[16] = {};
    std::memcpy(buf, p, n);
    return load(buf);
  }
  static Vec load_x(const int8_t* p) { return load(p); }
  static Vec load_x_part(const int8_t* p, size_t n) { return load_part(p, n); }
  static Vec load_w(const int8_t* p) { return load(p); }
  static Vec load_w_part(const int8_t* p, size_t n) { return load_part(p, n); }
  static Vec dot(Vec acc, Vec x, Vec w) { return _mm256_add_epi32(acc, _mm256_madd_epi16(x, w)); }
  static int32_t sum(Vec v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
  }
};
#endif

#if LOWBIT_CPU_AVX512
// vpdpbusd multiplies unsigned bytes by signed bytes, four per int32 lane, 64
// inputs a step. x is loaded as x + 128 (bit 7 flipped), which adds 128 *
// sum_k w[j, k] to every accumulator: the driver subtracts the weight's row
// sum. Sums wrap modulo 2^32 and the subtraction undoes the wrap, so the
// result is exact whenever the true dot product fits in int32. The k tail is
// a masked load: masked-out weights are 0, so those lanes add nothing.
struct VnniCore {
  static constexpr int kRows = 4, kCols = 4;
  static constexpr size_t kStep = 64;
  static constexpr bool kShifted = true;
  using Vec = __m512i;
  static Vec zero() { return _mm512_setzero_si512(); }
  static __mmask64 first(size_t n) { return _cvtu64_mask64((uint64_t(1) << n) - 1); }
  static Vec flip(Vec v) { return _mm512_xor_si512(v, _mm512_set1_epi8(char(0x80))); }
  static Vec load_x(const int8_t* p) { return flip(_mm512_loadu_si512(p)); }
  static Vec load_x_part(const int8_t* p, size_t n) {
    return flip(_mm512_maskz_loadu_epi8(first(n), p));
  }
  static Vec load_w(const int8_t* p) { return _mm512_loadu_si512(p); }
  static Vec load_w_part(const int8_t* p, size_t n) { return _mm512_maskz_loadu_epi8(first(n), p); }
  static Vec dot(Vec acc, Vec x, Vec w) { return _mm512_dpbusd_epi32(acc, x, w); }
  static int32_t sum(Vec v) { return _mm512_reduce_add_epi32(v); }
};
#endif

// One step of an MR x NR tile over inputs [kk, kk + n): a full vector, or
// the tail when kPart.
template <class Core, int MR, int NR, bool kPart>
inline void tile_step(typename Core::Vec (&acc)[MR][NR], const int8_t* x, const int8_t* w, size_t k,
                      size_t kk, size_t n) {
  typename Core::Vec wv[NR];
  for (int j = 0; j < NR; ++j)
    wv[j] = kPart ? Core::load_w_part(w + j * k + kk, n) : Core::load_w(w + j * k + kk);
  for (int i = 0; i < MR; ++i) {
    const typename Core::Vec xv =
        kPart ? Core::load_x_part(x + i * k + kk, n) : Core::load_x(x + i * k + kk);
    for (int j = 0; j < NR; ++j) acc[i][j] = Core::dot(acc[i][j], xv, wv[j]);
  }
}

// Rows [i, i + MR) of x against rows [o, o + NR) of W; results go to store.
template <class Core, int MR, int NR, class Store>
void tile(const int8_t* x, size_t i, const WeightInt8View& w, size_t o, const Store& store) {
  const size_t k = w.in_features;
  const int8_t* xt = x + i * k;
  const int8_t* wt = w.codes + o * k;
  typename Core::Vec acc[MR][NR];
  for (auto& row : acc)
    for (auto& a : row) a = Core::zero();
  size_t kk = 0;
  for (; kk + Core::kStep <= k; kk += Core::kStep)
    tile_step<Core, MR, NR, false>(acc, xt, wt, k, kk, Core::kStep);
  if (kk < k) tile_step<Core, MR, NR, true>(acc, xt, wt, k, kk, k - kk);
  for (int a = 0; a < MR; ++a)
    for (int b = 0; b < NR; ++b) {
      uint32_t s = uint32_t(Core::sum(acc[a][b]));
      if (Core::kShifted) s -= 128u * uint32_t(w.row_sums[o + b]);
      store(i + a, o + b, int32_t(s));
    }
}

// Rows [i, i + rows) of x against W rows [o0, o1): full MR x kCols tiles,
// then single W rows; `rows` below MR recurses to the smaller tile.
template <class Core, int MR, class Store>
void row_block(const int8_t* x, size_t i, size_t rows, const WeightInt8View& w, size_t o0,
               size_t o1, const Store& store) {
  if constexpr (MR > 1) {
    if (rows < size_t(MR)) return row_block<Core, MR - 1>(x, i, rows, w, o0, o1, store);
  }
  size_t o = o0;
  for (; o + Core::kCols <= o1; o += Core::kCols) tile<Core, MR, Core::kCols>(x, i, w, o, store);
  for (; o < o1; ++o) tile<Core, MR, 1>(x, i, w, o, store);
}

template <class Core, class Store>
void run_simd(const int8_t* x, size_t m, const WeightInt8View& w, const Store& store) {
  const ptrdiff_t blocks = ptrdiff_t((w.out_features + kBlockOut - 1) / kBlockOut);
  // Blocks are handed out as threads free up (a shared machine may stall one).
#pragma omp parallel for schedule(dynamic, 1)
  for (ptrdiff_t b = 0; b < blocks; ++b) {
    const size_t o0 = size_t(b) * kBlockOut, o1 = std::min(w.out_features, o0 + kBlockOut);
    for (size_t i = 0; i < m; i += Core::kRows)
      row_block<Core, Core::kRows>(x, i, std::min<size_t>(Core::kRows, m - i), w, o0, o1, store);
  }
}

template <class Store>
void run_ref(const int8_t* x, size_t m, const WeightInt8View& w, const Store& store) {
  const size_t k = w.in_features;
  const ptrdiff_t n = ptrdiff_t(w.out_features);
#pragma omp parallel for schedule(static)
  for (ptrdiff_t o = 0; o < n; ++o)
    for (size_t i = 0; i < m; ++i)
      store(i, size_t(o), dot_ref(x + i * k, w.codes + size_t(o) * k, k));
}

template <class Store>
void run(Int8Core core, const int8_t* x, size_t m, const WeightInt8View& w, const Store& store) {
  switch (core) {
    case Int8Core::Ref: return run_ref(x, m, w, store);
#if LOWBIT_CPU_AVX2
    case Int8Core::Avx2: return run_simd<Avx2Core>(x, m, w, store);
#endif
#if LOWBIT_CPU_AVX512
    case Int8Core::Vnni: return run_simd<VnniCore>(x, m, w, store);
#endif
    default: break;
  }
  LOWBIT_CHECK(false, "gemm_int8: the ", int8_core_name(core), " core is not in the ",
              cpu_isa_name(LOWBIT_CPU_ISA_ENUM), " path");
}

// The int32 results themselves.
struct StoreAcc {
  int32_t* acc;
  size_t n;
  void operator()(size_t i, size_t o, int32_t a) const { acc[i * n + o] = a; }
};

// The contract's float epilogue: float(acc) * row_factor * scale (+ bias).
struct StoreFloat {
  const float* row_factor;  // absmax_x * kInt8Dequant
  const float* scale;
  const float* bias;
  float* y;
  size_t n;
  void operator()(size_t i, size_t o, int32_t a) const {
    float v = float(a) * row_factor[i] * scale[o];
    if (bias) v += bias[o];
    y[i * n + o] = v;
  }
};

}  // namespace

std::vector<Int8Core> int8_cores() {
  std::vector<Int8Core> cores = {Int8Core::Ref};
#if LOWBIT_CPU_AVX2
  cores.push_back(Int8Core::Avx2);
#endif
#if LOWBIT_CPU_AVX512
  cores.push_back(Int8Core::Vnni);
#endif
  return cores;
}

void quantize_rows_int8(const float* x, size_t m, size_t k, int8_t* codes, float* absmax) {
  const ptrdiff_t rows = ptrdiff_t(m);
#pragma omp parallel for schedule(static)
  for (ptrdiff_t r = 0; r < rows; ++r) {
    const float* xr = x + size_t(r) * k;
    int8_t* c = codes + size_t(r) * k;
    const float a = block_absmax<F32>(xr, 0, k);
    // A zero row keeps scale 0 and codes 0 (127 / 0 would turn them into NaN).
    const float inv = a > 0.0f ? 127.0f / a : 0.0f;
    // |x| <= a, so |x * inv| rounds to at most 127. inf gives inf * 0 = NaN
    // (a = inf), NaN stays NaN: both mark the row and become code 0 here.
    int bad = 0;
    for (size_t j = 0; j < k; ++j) {
      float v = xr[j] * inv;
      const bool nan = v != v;
      bad |= int(nan);
      v = nan ? 0.0f : v;
      c[j] = int8_t(int32_t(std::nearbyint(v)));
    }
    if (bad) {
      std::memset(c, 0, k);
      absmax[r] = std::numeric_limits<float>::quiet_NaN();
    } else {
      absmax[r] = a;
    }
  }
}

void gemm_int8_s32(Int8Core core, const int8_t* x_codes, size_t m, const WeightInt8View& w,
                   int32_t* acc) {
  run(core, x_codes, m, w, StoreAcc{acc, w.out_features});
}

void gemm_int8_core(Int8Core core, const float* x, size_t m, const WeightInt8View& w,
                    const float* bias, float* y) {
  // Per call, reused by the calling thread (the team reads them).
  thread_local std::vector<int8_t> codes;
  thread_local std::vector<float> row_factor;
  codes.resize(m * w.in_features);
  row_factor.resize(m);
  quantize_rows_int8(x, m, w.in_features, codes.data(), row_factor.data());
  for (float& f : row_factor) f *= kInt8Dequant;
  run(core, codes.data(), m, w, StoreFloat{row_factor.data(), w.scale, bias, y, w.out_features});
}

void gemm_int8(const float* x, size_t m, const WeightInt8View& w, const float* bias, float* y) {
  gemm_int8_core(int8_cores().back(), x, m, w, bias, y);
}

LOWBIT_CPU_ISA_END
