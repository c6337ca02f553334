// One instruction-set path's CPU kernels as a table of entry points, and the
// path CpuBackend runs (kernels/cpu_isa.h says how it is chosen). Tests use
// isa_kernels() to run every path on the same inputs.
#pragma once

#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/decoder8.h"
#include "kernels/cpu/encoder8.h"
#include "kernels/cpu/matmul_4bit.h"
#include "kernels/cpu/matmul_int8.h"
#include "kernels/cpu_isa.h"

namespace lowbit::kernels::cpu {

struct IsaKernels {
  CpuIsa isa;
  decltype(&cpu::quantize_blockwise) quantize_blockwise;
  decltype(&cpu::dequantize_blockwise) dequantize_blockwise;
  decltype(&cpu::quantize_4bit) quantize_4bit;
  decltype(&cpu::dequantize_4bit) dequantize_4bit;
  decltype(&cpu::optimizer_update) optimizer_update;
  decltype(&cpu::optimizer_update_norms) optimizer_update_norms;
  decltype(&cpu::gradient_stats) gradient_stats;
  decltype(&cpu::gemm_4bit) gemm_4bit;
  decltype(&cpu::gemv_4bit) gemv_4bit;
  decltype(&cpu::gemm_4bit_input_grad) gemm_4bit_input_grad;
  decltype(&cpu::gemv_4bit_vectorised) gemv_4bit_vectorised;
  decltype(&cpu::gemv_4bit_int8) gemv_4bit_int8;
  decltype(&cpu::gemm_int8) gemm_int8;
  decltype(&cpu::gemm_int8_core) gemm_int8_core;
  decltype(&cpu::gemm_int8_s32) gemm_int8_s32;
  decltype(&cpu::quantize_rows_int8) quantize_rows_int8;
  decltype(&cpu::int8_cores) int8_cores;
  decltype(&cpu::encode_scaled_8bit) encode_scaled_8bit;
  decltype(&cpu::decode_scaled_8bit) decode_scaled_8bit;
};

// The table of `isa`, which must be one of cpu_isas().
const IsaKernels& isa_kernels(CpuIsa isa);

// The table of cpu_isa(): what CpuBackend runs.
const IsaKernels& active_kernels();

}  // namespace lowbit::kernels::cpu

LOWBIT_CPU_ISA_BEGIN

// This path's table (isa_table.cpp, built once per path).
const IsaKernels& path_kernels();

LOWBIT_CPU_ISA_END
