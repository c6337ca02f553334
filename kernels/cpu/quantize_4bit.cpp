// NF4 / FP4 blockwise quantization, two codes per byte (element 2j in the high
// nibble), following bitsandbytes' packing.
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/element_io.h"

namespace lowbit::kernels::cpu {
namespace {

// Elements encoded per inner chunk: small enough to live in registers/L1, a
// multiple of the smallest block size so chunks never straddle blocks.
constexpr size_t kChunk = 32;

template <typename T>
void quantize_typed(const typename T::Storage* x, size_t n, int blocksize,
                    const Format4Table& table, float* absmax, uint8_t* packed) {
  for_each_block(n, blocksize, [&](size_t b, size_t begin, size_t end) {
    const float m = block_absmax<T>(x, begin, end);
    absmax[b] = m;
    for (size_t c0 = begin; c0 < end; c0 += kChunk) {
      const size_t len = std::min(kChunk, end - c0);
      float r[kChunk];
      uint8_t pos[kChunk];
      for (size_t i = 0; i < kChunk; ++i) {
        r[i] = (i < len && m != 0.0f) ? T::load(x[c0 + i]) / m : 0.0f;
        pos[i] = 0;
      }
      // Nearest code = number of midpoints strictly below r (ties go low).
      for (int k = 0; k < 15; ++k) {
        const float t = table.midpoint[k];
        for (size_t i = 0; i < kChunk; ++i) pos[i] += r[i] > t ? 1 : 0;
      }
      uint8_t q[kChunk];
      for (size_t i = 0; i < kChunk; ++i) {
        const uint8_t c = table.sorted_code[pos[i]];
        q[i] = (c == table.zero_code && r[i] < 0.0f) ? table.negative_zero_code : c;
      }
      for (size_t i = len; i < kChunk; ++i) q[i] = table.zero_code;
      for (size_t j = 0; j < (len + 1) / 2; ++j)
        packed[c0 / 2 + j] = uint8_t(q[2 * j] << 4 | q[2 * j + 1]);
    }
  });
}

template <typename T>
void dequantize_typed(const uint8_t* packed, const float* absmax, size_t n, int blocksize,
                      const Format4Table& table, typename T::Storage* out) {
  for_each_block(n, blocksize, [&](size_t b, size_t begin, size_t end) {
    // value[c] * absmax for the 16 codes: the same products an element-wise
    // decode computes, made once per block so the inner loop is two lookups.
    typename T::Storage lut[16];
    for (int c = 0; c < 16; ++c) lut[c] = T::store(table.value[c] * absmax[b]);
    const size_t pairs = (end - begin) / 2;
    const uint8_t* p = packed + begin / 2;
    typename T::Storage* o = out + begin;
    for (size_t j = 0; j < pairs; ++j) {
      o[2 * j] = lut[p[j] >> 4];
      o[2 * j + 1] = lut[p[j] & 15];
    }
    if ((end - begin) & 1) o[2 * pairs] = lut[p[pairs] >> 4];
  });
}

}  // namespace

void quantize_4bit(const void* x, DType x_type, size_t n, int blocksize, Format4 format,
                   float* absmax, uint8_t* packed) {
  const Format4Table& table = format4_table(format);
  dispatch_float(x_type, [&](auto tag) {
    using T = decltype(tag);
    quantize_typed<T>(static_cast<const typename T::Storage*>(x), n, blocksize, table, absmax,
                      packed);
  });
}

void dequantize_4bit(const uint8_t* packed, const float* absmax, size_t n, int blocksize,
                     Format4 format, void* out, DType out_type) {
  const Format4Table& table = format4_table(format);
  dispatch_float(out_type, [&](auto tag) {
    using T = decltype(tag);
    dequantize_typed<T>(packed, absmax, n, blocksize, table, static_cast<typename T::Storage*>(out));
  });
}

}  // namespace lowbit::kernels::cpu
