#include "kernels/dtype.h"

#include "kernels/cpu/simd_intrinsics.h"
#include "kernels/cpu_isa.h"

namespace lowbit::kernels {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::U8: return "uint8";
  }
  return "unknown";
}

// The instructions are IEEE conversions (round to nearest even; subnormal
// halfs produced and read whatever FTZ / DAZ say, and subnormal floats encode
// to a signed zero either way, as in the scalar rule). They differ from the
// scalar rule only for NaN: they set the quiet bit and keep payload bits,
// where f16_to_float keeps a signalling half's bits as they are and
// float_to_f16 writes 0x7e00. NaN lanes are rare (the optimizers reject
// them): those groups are redone with the scalar rule.
#if defined(__x86_64__)
namespace {

// The AVX-512 forms, run when the CPU kernels run their AVX-512 path
// (kernels/cpu_isa.h); they return how many values they converted.
__attribute__((target("avx512f,f16c"))) size_t f16_to_float_avx512(const uint16_t* in, float* out,
                                                                   size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i)));
    _mm512_storeu_ps(out + i, f);
    if (_mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q) != 0)
      for (size_t j = i; j < i + 16; ++j) out[j] = f16_to_float(in[j]);
  }
  return i;
}

__attribute__((target("avx512f,f16c"))) size_t float_to_f16_avx512(const float* in, uint16_t* out,
                                                                   size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 f = _mm512_loadu_ps(in + i);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (_mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q) != 0)
      for (size_t j = i; j < i + 16; ++j) out[j] = float_to_f16(in[j]);
  }
  return i;
}

}  // namespace
#endif

void f16_to_float_n(const uint16_t* in, float* out, size_t n) {
  size_t i = 0;
#if defined(__x86_64__)
  if (cpu_isa() == CpuIsa::Avx512) i = f16_to_float_avx512(in, out, n);
#endif
  for (; i < n; ++i) out[i] = f16_to_float(in[i]);
}

void float_to_f16_n(const float* in, uint16_t* out, size_t n) {
  size_t i = 0;
#if defined(__x86_64__)
  if (cpu_isa() == CpuIsa::Avx512) i = float_to_f16_avx512(in, out, n);
#endif
  for (; i < n; ++i) out[i] = float_to_f16(in[i]);
}

}  // namespace lowbit::kernels
