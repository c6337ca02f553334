// 8-bit blockwise quantization with an arbitrary sorted 256-entry codebook.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/decoder8.h"
#include "kernels/cpu/element_io.h"
#include "kernels/cpu/encoder8.h"

LOWBIT_CPU_ISA_BEGIN
namespace {

constexpr size_t kChunk = 256;  // values converted per step, through a stack buffer

// Largest position whose code is <= r (0 when r is below every code).
inline int code_floor(const float* code, float r) {
  int pos = 0;
  for (int step = 128; step > 0; step >>= 1) pos += (r >= code[pos + step]) ? step : 0;
  return pos;
}

inline int stochastic_code(const float* code, float r, float u) {
  if (r <= code[0]) return 0;
  if (r >= code[255]) return 255;
  const int lo = code_floor(code, r);
  return lo + lb_round_up(r, code[lo], code[lo + 1], u);
}

template <typename T>
void quantize_typed(const typename T::Storage* x, size_t n, int blocksize, const float* code,
                    float* absmax, uint8_t* codes, const StochasticRounding& rounding) {
  const Encoder8& encoder = Encoder8::for_code(code);
  const uint8_t zero = uint8_t(zero_index(code, 256));
  for_each_block(n, blocksize, [&](size_t b, size_t begin, size_t end) {
    const float m = block_absmax<T>(x, begin, end);
    absmax[b] = m;
    if (!lb_absmax_scales(m)) {
      std::memset(codes + begin, zero, end - begin);
    } else if (rounding.enabled) {
      for (size_t i = begin; i < end; ++i)
        codes[i] = uint8_t(stochastic_code(code, T::load(x[i]) / m, element_uniform(rounding, i)));
    } else {
      // x / m for a chunk, then the encoder's vector path with scale 1 (an
      // exact multiply): the codes of encode(x / m), many per instruction.
      for (size_t c0 = begin; c0 < end; c0 += kChunk) {
        const size_t len = std::min(kChunk, end - c0);
        float r[kChunk];
        for (size_t i = 0; i < len; ++i) r[i] = T::load(x[c0 + i]) / m;
        encoder.encode_scaled(r, 1.0f, codes + c0, len);
      }
    }
  });
}

template <typename T>
void dequantize_typed(const uint8_t* codes, const float* absmax, const float* code, size_t n,
                      int blocksize, typename T::Storage* out, float offset) {
  const Decoder8& decoder = Decoder8::for_code(code);
  for_each_block(n, blocksize, [&](size_t b, size_t begin, size_t end) {
    // code[c] * absmax by the decoder's byte permutes (the same products),
    // then the offset and the output type.
    for (size_t c0 = begin; c0 < end; c0 += kChunk) {
      const size_t len = std::min(kChunk, end - c0);
      float v[kChunk];
      decoder.decode_scaled(codes + c0, absmax[b], v, len);
      for (size_t i = 0; i < len; ++i) out[c0 + i] = T::store(v[i] + offset);
    }
  });
}

}  // namespace

void quantize_blockwise(const void* x, DType x_type, size_t n, int blocksize, const float* code,
                        float* absmax, uint8_t* codes, const StochasticRounding& rounding) {
  dispatch_float(x_type, [&](auto tag) {
    using T = decltype(tag);
    quantize_typed<T>(static_cast<const typename T::Storage*>(x), n, blocksize, code, absmax,
                      codes, rounding);
  });
}

void dequantize_blockwise(const uint8_t* codes, const float* absmax, const float* code, size_t n,
                          int blocksize, void* out, DType out_type, float offset) {
  dispatch_float(out_type, [&](auto tag) {
    using T = decltype(tag);
    dequantize_typed<T>(codes, absmax, code, n, blocksize, static_cast<typename T::Storage*>(out),
                        offset);
  });
}

LOWBIT_CPU_ISA_END
