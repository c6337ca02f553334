// Table lookups of 32-bit entries for the NEON path (kernels/cpu/isa_region.h).
// NEON has byte table lookups (tbl / tbx over up to 64 bytes) but no 32-bit
// permute across a 16-entry table or a gather, so the kernels look 32-bit
// entries up in two ways: by their four byte planes (a byte index per lane,
// four lookups, then zips that put the bytes of each entry together), or by
// turning a 32-bit lane index into the four byte indices of its entry.
// Lookups copy bits, so results are those of the scalar loads.
#pragma once

#include <cstdint>

#include "kernels/cpu/isa_region.h"
#include "kernels/cpu/simd_intrinsics.h"

#if LOWBIT_CPU_NEON

// Byte k of an entry is its k-th least significant byte only on little-endian
// targets (aarch64 Linux; big-endian aarch64_be is not supported).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the NEON path assumes little-endian");

LOWBIT_CPU_ISA_BEGIN

// Bytes k of 16 little-endian 32-bit entries (plane[k][e] = byte k of entry e)
// to the 16 entries, in order, as four vectors.
inline void join_planes(const uint8x16_t plane[4], uint32x4_t out[4]) {
  const uint16x8_t b01_lo = vreinterpretq_u16_u8(vzip1q_u8(plane[0], plane[1]));
  const uint16x8_t b01_hi = vreinterpretq_u16_u8(vzip2q_u8(plane[0], plane[1]));
  const uint16x8_t b23_lo = vreinterpretq_u16_u8(vzip1q_u8(plane[2], plane[3]));
  const uint16x8_t b23_hi = vreinterpretq_u16_u8(vzip2q_u8(plane[2], plane[3]));
  out[0] = vreinterpretq_u32_u16(vzip1q_u16(b01_lo, b23_lo));
  out[1] = vreinterpretq_u32_u16(vzip2q_u16(b01_lo, b23_lo));
  out[2] = vreinterpretq_u32_u16(vzip1q_u16(b01_hi, b23_hi));
  out[3] = vreinterpretq_u32_u16(vzip2q_u16(b01_hi, b23_hi));
}

// A 16-entry table of 32-bit values, looked up 16 byte indices (0..15) at a
// time by its byte planes.
class PlaneTable16 {
 public:
  // ld4 splits 64 bytes four ways (byte 4e + k to plane k): the planes.
  explicit PlaneTable16(const void* entries)
      : plane_(vld4q_u8(static_cast<const uint8_t*>(entries))) {}

  // out[4] = entries[index[0..15]], in order.
  void lookup(uint8x16_t index, uint32x4_t out[4]) const {
    uint8x16_t picked[4];
    for (int k = 0; k < 4; ++k) picked[k] = vqtbl1q_u8(plane_.val[k], index);
    join_planes(picked, out);
  }

 private:
  uint8x16x4_t plane_;
};

// A 16-entry table of 32-bit values (64 bytes in one tbl4 table), looked up
// by four 32-bit lane indices of which only the low 4 bits count.
class LaneTable16 {
 public:
  explicit LaneTable16(const void* entries)
      : bytes_(vld1q_u8_x4(static_cast<const uint8_t*>(entries))) {}

  uint32x4_t lookup(uint32x4_t index) const {
    // Entry e's bytes are 4e..4e+3: the index times 4 copied to each byte of
    // its lane (4e <= 60: no carries), plus 0, 1, 2, 3.
    const uint32x4_t first = vshlq_n_u32(vandq_u32(index, vdupq_n_u32(15)), 2);
    const uint32x4_t bytes =
        vorrq_u32(vmulq_n_u32(first, 0x01010101u), vdupq_n_u32(0x03020100u));
    return vreinterpretq_u32_u8(vqtbl4q_u8(bytes_, vreinterpretq_u8_u32(bytes)));
  }

 private:
  uint8x16x4_t bytes_;
};

// 16 packed bytes of 4-bit codes (element 2j in the high nibble) to 32 floats,
// value[code] * scale each (the products a scalar decode computes), stored at
// out[0..32).
inline void decode_nibbles_scaled(const PlaneTable16& values, const uint8_t* packed,
                                  float32x4_t scale, float* out) {
  const uint8x16_t b = vld1q_u8(packed);
  const uint8x16_t high = vshrq_n_u8(b, 4), low = vandq_u8(b, vdupq_n_u8(15));
  uint32x4_t f[4];
  values.lookup(vzip1q_u8(high, low), f);
  for (int q = 0; q < 4; ++q) vst1q_f32(out + 4 * q, vmulq_f32(vreinterpretq_f32_u32(f[q]), scale));
  values.lookup(vzip2q_u8(high, low), f);
  for (int q = 0; q < 4; ++q)
    vst1q_f32(out + 16 + 4 * q, vmulq_f32(vreinterpretq_f32_u32(f[q]), scale));
}

LOWBIT_CPU_ISA_END

#endif  // LOWBIT_CPU_NEON
