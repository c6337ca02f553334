#include "kernels/cpu/encoder8.h"

#include "kernels/cpu/simd_intrinsics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/codebook.h"
#include "kernels/cpu/codebook_cache.h"
#include "kernels/cpu/neon_tables.h"

LOWBIT_CPU_ISA_BEGIN
namespace {

float key_to_float(uint32_t key) {
  return bits_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// The vector path evaluates t = fma(y, slope, offset); offsets carry +kShiftUp
// so that a magnitude code m is floor(t) wherever t is not within kWindow
// above an integer. kShiftUp exceeds the rounding of t (floats below 256 are
// spaced 2^-16 at most) and the codebook's deviation from its linear runs.
constexpr float kShiftUp = 0x1p-12f;
constexpr float kWindow = 0x1p-11f;
// Spans of |r| looked up, two binades each: exponent fields 96..127 give
// [2^-31, 2) as 16 spans (|r| <= 1 by contract), everything below in the first.
constexpr int kFirstExponent = 96;
constexpr int kSpans = 16;
constexpr size_t kMaxPieces = 16;

struct Piece {
  float slope, offset;
  float top;  // the largest y of the piece (exclusive start of the next); inf for the last
};

float piece_t(const Piece& p, float y) { return std::fma(y, p.slope, p.offset); }

// True if piece p reproduces the magnitude codes of y in (lo, p.top] (and of
// y == lo for negative r, whose ties go to the larger magnitude), where the
// code of y is the number of magnitude midpoints q below y: floor(t) unless
// t is ambiguous (fraction < kWindow). With t monotone in y, it suffices that
// t(lo) >= code(lo+), that every midpoint inside gets t in [code above it,
// + kWindow), and that t(top) < code(top) + 1 + kWindow.
bool piece_is_exact(const Piece& p, float lo, const std::vector<float>& q) {
  const auto count_le = [&](float y) { return int(std::upper_bound(q.begin(), q.end(), y) - q.begin()); };
  const auto count_lt = [&](float y) { return int(std::lower_bound(q.begin(), q.end(), y) - q.begin()); };
  const int low_code = count_le(lo);
  if (p.slope == 0.0f) {
    const float fraction = p.offset - std::floor(p.offset);
    return int(std::floor(p.offset)) == low_code && fraction >= kWindow &&
           (std::isinf(p.top) || count_lt(p.top) == low_code);
  }
  if (std::isinf(p.top) || piece_t(p, lo) < float(low_code)) return false;
  for (int m = low_code; m < int(q.size()) && q[size_t(m)] < p.top; ++m) {
    const float t = piece_t(p, q[size_t(m)]);
    if (!(t >= float(m + 1) && t < float(m + 1) + kWindow)) return false;
  }
  return piece_t(p, p.top) < float(count_lt(p.top) + 1) + kWindow;
}

// Pieces for magnitude midpoints q (ascending, positive), greedily: a linear
// piece over each longest run of midpoints it fits, constant pieces between.
// k counts the midpoints at or below the current piece's start: the code just
// above it.
std::vector<Piece> greedy_pieces(const std::vector<float>& q) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<Piece> pieces;
  const auto constant = [&](size_t code, float top) {
    pieces.push_back({0.0f, float(code) + 0.5f, top});
  };
  // The line through (q[k], k + 1) and (q[j], j + 1), shifted up.
  const auto line = [&](size_t k, size_t j, float top) {
    const float slope = float(double(j - k) / (double(q[j]) - double(q[k])));
    const double offset = double(k + 1) - double(q[k]) * double(slope) + double(kShiftUp);
    return Piece{slope, float(offset), top};
  };
  float lo = 0.0f;
  size_t k = 0;
  while (k < q.size()) {
    if (k + 1 < q.size() && piece_is_exact(line(k, k + 1, q[k + 1]), lo, q)) {
      size_t j = k + 1;
      while (j + 1 < q.size() && piece_is_exact(line(k, j + 1, q[j + 1]), lo, q)) ++j;
      // The line runs through q[k..j]. It ends at the next midpoint if it
      // still holds there, else half a spacing past q[j], followed by a
      // constant piece up to the next midpoint.
      Piece fit = line(k, j, j + 1 < q.size() ? q[j + 1] : inf);
      if (j + 1 < q.size() && piece_is_exact(fit, lo, q)) {
        pieces.push_back(fit);
        lo = q[j + 1];
        k = j + 2;
        continue;
      }
      fit.top = float(double(q[j]) + 0.5 * (double(q[j]) - double(q[k])) / double(j - k));
      pieces.push_back(fit);
      if (j + 1 == q.size()) {
        constant(j + 1, inf);
        return pieces;
      }
      constant(j + 1, q[j + 1]);
      lo = q[j + 1];
      k = j + 2;
      continue;
    }
    constant(k, q[k]);  // the cell (lo, q[k]]
    lo = q[k];
    ++k;
  }
  constant(k, inf);
  return pieces;
}

// Joins the spans of `pc` greedily into windows: each takes the next spans
// while they hold at most two thresholds together. A span's first piece is
// its window's first piece plus the window's thresholds below it, so a value
// finds its piece from its window alone. Nothing if more than 8 are needed.
std::optional<Encoder8::Pieces::Windows> make_windows(const Encoder8::Pieces& pc,
                                                      size_t pieces) {
  constexpr int32_t kNone = std::numeric_limits<int32_t>::max();
  Encoder8::Pieces::Windows out;
  std::vector<int32_t> thresholds;  // of the window being filled
  size_t w = 0;
  const auto close = [&](int span) {
    const size_t first = size_t(pc.first[size_t(span)]);
    thresholds.resize(2, kNone);
    out.threshold1[w] = thresholds[0];
    out.threshold2[w] = thresholds[1];
    // A piece past the last is never reached (its threshold is kNone).
    for (size_t k = 0; k < 3; ++k) {
      const size_t p = std::min(first + k, pieces - 1);
      out.slope[k][w] = pc.slope[p];
      out.offset[k][w] = pc.offset[p];
    }
    thresholds.clear();
    ++w;
  };
  int start = 0;
  for (int b = 0; b < kSpans; ++b) {
    std::vector<int32_t> inside;
    for (int32_t t : {pc.threshold1[size_t(b)], pc.threshold2[size_t(b)]})
      if (t != kNone) inside.push_back(t);
    if (thresholds.size() + inside.size() > 2) {
      close(start);
      if (w == 8) return std::nullopt;
      start = b;
    }
    thresholds.insert(thresholds.end(), inside.begin(), inside.end());
    out.of_span[size_t(b)] = out.of_span[size_t(16 + b)] = uint8_t(w);
  }
  close(start);
  return out;
}

}  // namespace

// The vector path's pieces for this codebook, or nothing (scalar path only).
std::optional<Encoder8::Pieces> Encoder8::make_pieces() const {
  int zero = -1;
  for (int i = 0; i < 256; ++i)
    if (code_[size_t(i)] == 0.0f) zero = i;
  const int negatives = zero;
  if (zero < 0 || negatives > 255 - zero) return std::nullopt;
  for (int j = 1; j <= negatives; ++j)
    if (code_[size_t(zero - j)] != -code_[size_t(zero + j)] ||
        mid_[size_t(zero - j)] != -mid_[size_t(zero + j - 1)])
      return std::nullopt;
  const std::vector<float> q(mid_.begin() + zero, mid_.begin() + 255);
  const std::vector<Piece> pieces = greedy_pieces(q);
  if (pieces.size() > kMaxPieces) return std::nullopt;
  Pieces out;
  out.zero = zero;
  float lo = 0.0f;
  for (size_t p = 0; p < pieces.size(); ++p) {
    if (!piece_is_exact(pieces[p], lo, q)) return std::nullopt;
    out.slope[p] = pieces[p].slope;
    out.offset[p] = pieces[p].offset;
    lo = pieces[p].top;
  }
  // Span b holds |r| in [2^(2b - 31), 2^(2b - 29)) (b = 0 from 0). Its first
  // piece holds its smallest value; the thresholds are the piece tops inside
  // it, which |r| must exceed (exceed or reach, for negative r).
  for (int b = 0; b < kSpans; ++b) {
    const float low = b == 0 ? 0.0f : std::ldexp(1.0f, kFirstExponent - 127 + 2 * b);
    const float high = std::ldexp(1.0f, kFirstExponent - 127 + 2 * b + 2);
    std::vector<int32_t> inside;
    int first = 0;
    for (size_t p = 0; p + 1 < pieces.size(); ++p) {
      if (pieces[p].top < low) first = int(p) + 1;
      else if (pieces[p].top < high) inside.push_back(int32_t(float_bits(pieces[p].top)));
    }
    if (inside.size() > 2) return std::nullopt;
    inside.resize(2, std::numeric_limits<int32_t>::max());
    out.first[size_t(b)] = first;
    out.threshold1[size_t(b)] = inside[0];
    out.threshold2[size_t(b)] = inside[1];
  }
  out.windows = make_windows(out, pieces.size());
  return out;
}

Encoder8::Encoder8(const float* code) : start_(size_t(1) << (32 - kShift)), fast_(true) {
  std::copy(code, code + 256, code_.begin());
  for (int i = 0; i < 255; ++i) mid_[i] = code_midpoint(code, i);
  mid_[255] = std::numeric_limits<float>::infinity();
  const float* mid_begin = mid_.data();
  const float* mid_end = mid_begin + 255;
  for (size_t b = 0; b < start_.size(); ++b) {
    const float lo = key_to_float(uint32_t(b) << kShift);
    const float hi = key_to_float(uint32_t(((b + 1) << kShift) - 1));
    if (std::isnan(lo) || std::isnan(hi)) continue;  // NaN buckets: never a finite r
    const auto below = std::lower_bound(mid_begin, mid_end, lo) - mid_begin;
    const auto upto = std::upper_bound(mid_begin, mid_end, hi) - mid_begin;
    start_[b] = uint8_t(below);
    if (upto - below > 1) fast_ = false;  // two midpoints in one bucket: search instead
  }
  pieces_ = make_pieces();
}

int Encoder8::encode_search(float r) const {
  int pos = 0;
  for (int step = 128; step > 0; step >>= 1) pos += (r > mid_[pos + step - 1]) ? step : 0;
  return pos;
}

#if LOWBIT_CPU_AVX2 || LOWBIT_CPU_NEON
namespace {

// The lane operations of encode_pieces: 16 lanes with AVX-512 (masks in mask
// registers), 4 with NEON (masks as all-ones lanes, 16-entry tables as
// 64-byte table lookups). Both read an index's low 4 bits only, so the loop
// is written once. AVX2 has its own loop (Avx2Pieces).
#if LOWBIT_CPU_AVX512
struct Lanes {
  static constexpr size_t kCount = 16;
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;
  struct Table {
    I v;
  };
  static Table table(const void* p) { return {_mm512_loadu_si512(p)}; }
  static I lookup(const Table& t, I index) { return _mm512_permutexvar_epi32(index, t.v); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F set(float v) { return _mm512_set1_ps(v); }
  static I set(int32_t v) { return _mm512_set1_epi32(v); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static I bits(F a) { return _mm512_castps_si512(a); }
  static F floats(I a) { return _mm512_castsi512_ps(a); }
  static I and_(I a, I b) { return _mm512_and_si512(a, b); }
  static I add(I a, I b) { return _mm512_add_epi32(a, b); }
  static I shift_right_24(I a) { return _mm512_srli_epi32(a, 24); }
  static I max_unsigned(I a, I b) { return _mm512_max_epu32(a, b); }
  static I max_signed(I a, I b) { return _mm512_max_epi32(a, b); }
  static I truncate(F a) { return _mm512_cvttps_epi32(a); }
  static M negative(I a) { return _mm512_movepi32_mask(a); }
  static M greater(I a, I b) { return _mm512_cmpgt_epi32_mask(a, b); }
  // t - floor(t) < w
  static M fraction_below(F t, F w) {
    return _mm512_cmp_ps_mask(_mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC), w,
                              _CMP_LT_OQ);
  }
  static I add_where(M m, I a, I b) { return _mm512_mask_add_epi32(a, m, a, b); }
  static I sub_where(M m, I otherwise, I a, I b) { return _mm512_mask_sub_epi32(otherwise, m, a, b); }
  static I zero_where(M m, I a) { return _mm512_maskz_mov_epi32(_knot_mask16(m), a); }
  static void store_bytes(uint8_t* p, I a) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(a));
  }
  static unsigned lanes(M m) { return m; }
};
#elif LOWBIT_CPU_NEON
struct Lanes {
  static constexpr size_t kCount = 4;
  using F = float32x4_t;
  using I = int32x4_t;
  using M = uint32x4_t;
  using Table = LaneTable16;
  static Table table(const void* p) { return Table(p); }
  static I lookup(const Table& t, I index) {
    return vreinterpretq_s32_u32(t.lookup(vreinterpretq_u32_s32(index)));
  }
  static F load(const float* p) { return vld1q_f32(p); }
  static F set(float v) { return vdupq_n_f32(v); }
  static I set(int32_t v) { return vdupq_n_s32(v); }
  static F mul(F a, F b) { return vmulq_f32(a, b); }
  static F fma(F a, F b, F c) { return vfmaq_f32(c, a, b); }  // c + a * b, one rounding
  static I bits(F a) { return vreinterpretq_s32_f32(a); }
  static F floats(I a) { return vreinterpretq_f32_s32(a); }
  static I and_(I a, I b) { return vandq_s32(a, b); }
  static I add(I a, I b) { return vaddq_s32(a, b); }
  static I shift_right_24(I a) {
    return vreinterpretq_s32_u32(vshrq_n_u32(vreinterpretq_u32_s32(a), 24));
  }
  static I max_unsigned(I a, I b) {
    return vreinterpretq_s32_u32(vmaxq_u32(vreinterpretq_u32_s32(a), vreinterpretq_u32_s32(b)));
  }
  static I max_signed(I a, I b) { return vmaxq_s32(a, b); }
  static I truncate(F a) { return vcvtq_s32_f32(a); }  // toward zero, as cvttps
  static M negative(I a) { return vreinterpretq_u32_s32(vshrq_n_s32(a, 31)); }
  static M greater(I a, I b) { return vcgtq_s32(a, b); }
  // t - floor(t) < w (the subtraction is exact)
  static M fraction_below(F t, F w) { return vcltq_f32(vsubq_f32(t, vrndmq_f32(t)), w); }
  static I add_where(M m, I a, I b) { return vaddq_s32(a, vandq_s32(vreinterpretq_s32_u32(m), b)); }
  static I sub_where(M m, I otherwise, I a, I b) {
    return vbslq_s32(m, vsubq_s32(a, b), otherwise);
  }
  static I zero_where(M m, I a) { return vbicq_s32(a, vreinterpretq_s32_u32(m)); }
  static void store_bytes(uint8_t* p, I a) {  // codes are 0..255: narrowing keeps them
    const uint16x4_t words = vmovn_u32(vreinterpretq_u32_s32(a));
    const uint8x8_t bytes = vmovn_u16(vcombine_u16(words, words));
    vst1_lane_u32(reinterpret_cast<uint32_t*>(p), vreinterpret_u32_u8(bytes), 0);
  }
  static unsigned lanes(M m) {
    const uint32_t bit[4] = {1, 2, 4, 8};
    return vaddvq_u32(vandq_u32(m, vld1q_u32(bit)));
  }
};
#endif

#if LOWBIT_CPU_AVX2 && !LOWBIT_CPU_AVX512
// AVX2 has no 16-entry permute, so the Lanes loop would look each table up
// with two vpermd and a blend: 58 vector uops per 8 values. Instead the 16
// spans are joined into at most 8 windows (Pieces::Windows), indexed by the
// low 3 bits that one vpermd reads. A value finds its window with one byte
// shuffle of its span, then looks up the window's thresholds and the slopes
// and offsets of its three pieces side by side, and picks the piece with
// blends: no lookup waits for another, and every value takes the same road.
// On Zen 4 this loop did not speed up when vector uops were taken out of it,
// only when its chain from x to the ambiguity mask got shorter (the FP
// scheduler seems to hold about one iteration): hence the blends instead of
// a second lookup after the thresholds, the fraction test on t - 2^-11
// beside the code, and no clamp (the packs saturate). Four groups share one
// pack and store. The tables are read from the Pieces in place: building them
// in registers per call (per 256-value block of a step) cost ~60 cycles.
// Per value, 256-value blocks in L1, one core of the Zen 4 VM, medians of 31
// interleaved runs: 0.39 ns (signed map) and 0.39 (unsigned) for values at or
// above 2^-15 before the windows (then the only fast road; the AVX-512 loop:
// 0.32 and 0.26); the windows' figures are in docs/PERFORMANCE.md.
class Avx2Pieces {
 public:
  explicit Avx2Pieces(const Encoder8::Pieces& pc)
      : w_(*pc.windows), zero_(_mm256_set1_epi32(pc.zero)) {}

  // codes[0..32) = the codes of x[0..32) * scale, but for the lanes returned
  // (bit l: value l), whose t is too close to an integer to decide.
  template <bool kNegatives>
  uint32_t encode32(const float* x, __m256 scale, uint8_t* codes) const {
    __m256i c[4];
    uint32_t ambiguous = 0;
    for (int h = 0; h < 4; h += kStage) {
      __m256i r[kStage];
      for (int g = 0; g < kStage; ++g)
        r[g] = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * (h + g)), scale));
      ambiguous |= code<kNegatives>(r, c + h) << (8 * h);
    }
    // Codes are 0..255 (negative sums saturate to 0: the clamp of the Lanes
    // loop). The packs work per 128-bit lane, leaving codes 0-3 of each group
    // in dwords 0-3 and codes 4-7 in dwords 4-7; the permute puts them in order.
    const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(c[0], c[1]),
                                              _mm256_packus_epi32(c[2], c[3]));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes),
                        _mm256_permutevar8x32_epi32(bytes, order));
    return ambiguous;
  }

 private:
  // Groups that go through each stage of `code` together: two measured 3-5%
  // faster than one or four.
  static constexpr int kStage = 2;
  // The codes of kStage groups (r = x * scale as bits), as the Lanes loop
  // computes them, but for the clamp at 0; returns the lanes to decide by the
  // scalar search (bit 8g + l: lane l of group g).
  template <bool kNegatives>
  uint32_t code(const __m256i* r, __m256i* c) const {
    __m256i y[kStage], negative[kStage], y_cmp[kStage], window[kStage];
    for (int g = 0; g < kStage; ++g) {
      y[g] = _mm256_and_si256(r[g], _mm256_set1_epi32(0x7fffffff));
      negative[g] = _mm256_cmpgt_epi32(_mm256_setzero_si256(), r[g]);
      // Negative r also passes a threshold it equals (see the Lanes loop).
      y_cmp[g] = kNegatives ? _mm256_sub_epi32(y[g], negative[g]) : y[g];
      // Exponent / 2, at least 48 (0x30..0x3f): the byte shuffle reads its
      // low 4 bits and leaves the window in the low byte, which vpermd reads.
      const __m256i span = _mm256_srli_epi32(
          _mm256_max_epi32(y[g], _mm256_set1_epi32(kFirstExponent << 23)), 24);
      window[g] = _mm256_shuffle_epi8(
          _mm256_load_si256(reinterpret_cast<const __m256i*>(w_.of_span.data())), span);
    }
    __m256 past1[kStage], past2[kStage];
    for (int g = 0; g < kStage; ++g) {
      const auto entry8 = [&](const std::array<int32_t, 8>& table) {
        return _mm256_permutevar8x32_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table.data())), window[g]);
      };
      past1[g] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(y_cmp[g], entry8(w_.threshold1)));
      past2[g] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(y_cmp[g], entry8(w_.threshold2)));
    }
    uint32_t ambiguous = 0;
    for (int g = 0; g < kStage; ++g) {
      const auto pick = [&](const std::array<std::array<float, 8>, 3>& piece) {
        const auto entry = [&](size_t k) {
          return _mm256_permutevar8x32_ps(_mm256_loadu_ps(piece[k].data()), window[g]);
        };
        return _mm256_blendv_ps(_mm256_blendv_ps(entry(0), entry(1), past1[g]), entry(2),
                                past2[g]);
      };
      const __m256 t =
          _mm256_fmadd_ps(_mm256_castsi256_ps(y[g]), pick(w_.slope), pick(w_.offset));
      // The fraction of t is below kWindow where t - kWindow (exact: t < 2^13)
      // truncates to another integer. t >= 0, so truncation is floor; t below
      // kWindow is not flagged, but its code 0 is right (no code is below 0).
      const __m256i magnitude_code = _mm256_cvttps_epi32(t);
      const __m256i step_below = _mm256_cvttps_epi32(_mm256_sub_ps(t, _mm256_set1_ps(kWindow)));
      ambiguous |= (uint32_t(_mm256_movemask_ps(_mm256_castsi256_ps(
                        _mm256_cmpeq_epi32(magnitude_code, step_below)))) ^ 0xffu)
                   << (8 * g);
      // zero +/- m (without negative entries every negative r gets code 0).
      if constexpr (kNegatives)
        c[g] = _mm256_add_epi32(zero_, _mm256_sub_epi32(_mm256_xor_si256(magnitude_code,
                                                                         negative[g]),
                                                        negative[g]));
      else
        c[g] = _mm256_andnot_si256(negative[g], magnitude_code);
    }
    return ambiguous;
  }

  const Encoder8::Pieces::Windows& w_;
  __m256i zero_;
};
#endif

}  // namespace

#if LOWBIT_CPU_AVX2 && !LOWBIT_CPU_AVX512
template <bool kNegatives>
size_t Encoder8::encode_pieces(const float* x, float scale, uint8_t* codes, size_t n) const {
  if (!pieces_->windows) return 0;
  const Avx2Pieces pieces(*pieces_);
  const __m256 m = _mm256_set1_ps(scale);
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    encode_lanes(pieces.encode32<kNegatives>(x + i, m, codes + i), x + i, scale, codes + i);
  return i;
}
#else
template <bool kNegatives>
size_t Encoder8::encode_pieces(const float* x, float scale, uint8_t* codes, size_t n) const {
  using L = Lanes;
  const Pieces& pc = *pieces_;
  const L::Table first = L::table(pc.first.data());
  const L::Table above1 = L::table(pc.threshold1.data());
  const L::Table above2 = L::table(pc.threshold2.data());
  const L::Table slope = L::table(pc.slope.data());
  const L::Table offset = L::table(pc.offset.data());
  const L::F m = L::set(scale);
  const L::F window = L::set(kWindow);
  const L::I magnitude = L::set(int32_t(0x7fffffff));
  const L::I lowest = L::set(int32_t(kFirstExponent / 2));
  const L::I one = L::set(int32_t(1));
  const L::I zero = L::set(int32_t(pc.zero));
  // The codes of the kCount values at x + at, without the clamp at 0, and
  // the lanes whose t is too close to an integer to decide.
  const auto group_codes = [&](size_t at, L::M& ambiguous) {
    const L::I r = L::bits(L::mul(L::load(x + at), m));
    const L::M negative = L::negative(r);
    const L::I y = L::and_(r, magnitude);
    // Exponent / 2, at least 48: its low 4 bits select the span (48 = 3 * 16).
    const L::I span = L::max_unsigned(L::shift_right_24(y), lowest);
    // Negative r also passes a threshold it equals: compare y + 1 ulp. (Without
    // negative entries the code of a negative r is 0 whatever the piece.)
    const L::I y_cmp = kNegatives ? L::add_where(negative, y, one) : y;
    L::I piece = L::lookup(first, span);
    piece = L::add_where(L::greater(y_cmp, L::lookup(above1, span)), piece, one);
    piece = L::add_where(L::greater(y_cmp, L::lookup(above2, span)), piece, one);
    const L::F t = L::fma(L::floats(y), L::floats(L::lookup(slope, piece)),
                          L::floats(L::lookup(offset, piece)));
    ambiguous = L::fraction_below(t, window);
    const L::I magnitude_code = L::truncate(t);
    if constexpr (kNegatives)
      return L::sub_where(negative, L::add(zero, magnitude_code), zero, magnitude_code);
    else
      return L::zero_where(negative, magnitude_code);
  };
  size_t i = 0;
#if LOWBIT_CPU_AVX512
  // Four groups per step, narrowed to bytes by two saturating packs (which
  // also clamp negative codes at 0) and put in order by one permute: the
  // packs work per 128-bit lane, leaving dword 4k + g with codes 4k .. 4k + 3
  // of group g. On the Zen 4 VM (256-value blocks in L1, best of 31) 0.284 /
  // 0.251 ns per value (signed / unsigned map) against 0.308 / 0.259 with a
  // narrowing store (vpmovdb) per group.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (; i + 4 * L::kCount <= n; i += 4 * L::kCount) {
    L::M ambiguous[4];
    L::I c[4];
    for (size_t g = 0; g < 4; ++g) c[g] = group_codes(i + g * L::kCount, ambiguous[g]);
    const __m512i bytes =
        _mm512_packus_epi16(_mm512_packus_epi32(c[0], c[1]), _mm512_packus_epi32(c[2], c[3]));
    _mm512_storeu_si512(codes + i, _mm512_permutexvar_epi32(order, bytes));
    if ((ambiguous[0] | ambiguous[1] | ambiguous[2] | ambiguous[3]) == 0) continue;
    for (size_t g = 0; g < 4; ++g)
      encode_lanes(L::lanes(ambiguous[g]), x + i + g * L::kCount, scale, codes + i + g * L::kCount);
  }
#endif
  for (; i + L::kCount <= n; i += L::kCount) {
    L::M ambiguous;
    L::I code = group_codes(i, ambiguous);
    if constexpr (kNegatives) code = L::max_signed(code, L::set(int32_t(0)));
    L::store_bytes(codes + i, code);
    encode_lanes(L::lanes(ambiguous), x + i, scale, codes + i);
  }
  return i;
}
#endif
#endif

void Encoder8::encode_scaled(const float* x, float scale, uint8_t* codes, size_t n) const {
  size_t i = 0;
#if LOWBIT_CPU_AVX2 || LOWBIT_CPU_NEON
  if (pieces_) {
    i = pieces_->zero > 0 ? encode_pieces<true>(x, scale, codes, n)
                          : encode_pieces<false>(x, scale, codes, n);
  }
#endif
  for (; i < n; ++i) codes[i] = uint8_t(encode(x[i] * scale));
}

const Encoder8& Encoder8::for_code(const float* code) { return for_codebook<Encoder8>(code); }

void encode_scaled_8bit(const float* code, const float* x, float scale, uint8_t* codes, size_t n) {
  Encoder8::for_code(code).encode_scaled(x, scale, codes, n);
}

LOWBIT_CPU_ISA_END
