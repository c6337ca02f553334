// The CPU's byte-permute 8-bit decoder (Decoder8 of every instruction-set path
// this CPU runs; the AVX-512 path's uses VBMI) against the exact product
// code[c] * absmax it must reproduce.
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/codebook.h"
#include "kernels/cpu/isa_kernels.h"

namespace lowbit {
namespace {

TEST(Decoder8, DecodesEveryCodeToTheExactProduct) {
  for (bool is_signed : {true, false}) {
    const auto map = kernels::dynamic_map(is_signed);
    // Every code in order, then random codes; 64 * 9 + 13 values: full vector
    // steps and a scalar tail.
    std::vector<uint8_t> codes;
    for (int c = 0; c < 256; ++c) codes.push_back(uint8_t(c));
    std::mt19937 rng(5);
    std::uniform_int_distribution<int> any(0, 255);
    while (codes.size() < 64 * 9 + 13) codes.push_back(uint8_t(any(rng)));
    for (kernels::CpuIsa isa : kernels::cpu_isas())
      for (float absmax : {1.0f, 0.0f, 3.7e-3f, 1.5e5f}) {
        std::vector<float> out(codes.size());
        kernels::cpu::isa_kernels(isa).decode_scaled_8bit(map.data(), codes.data(), absmax,
                                                          out.data(), codes.size());
        for (size_t i = 0; i < codes.size(); ++i)
          ASSERT_EQ(out[i], map[codes[i]] * absmax) << kernels::cpu_isa_name(isa) << " code "
                                                    << int(codes[i]) << " absmax " << absmax;
      }
  }
}

}  // namespace
}  // namespace lowbit
