// The entry-point table of the path this file is compiled for.
#include "kernels/cpu/isa_kernels.h"

LOWBIT_CPU_ISA_BEGIN

const IsaKernels& path_kernels() {
  static const IsaKernels table{
      LOWBIT_CPU_ISA_ENUM,
      quantize_blockwise,
      dequantize_blockwise,
      quantize_4bit,
      dequantize_4bit,
      optimizer_update,
      optimizer_update_norms,
      gradient_stats,
      gemm_4bit,
      gemv_4bit,
      gemm_4bit_input_grad,
      gemv_4bit_vectorised,
      gemv_4bit_int8,
      gemm_int8,
      gemm_int8_core,
      gemm_int8_s32,
      quantize_rows_int8,
      int8_cores,
      encode_scaled_8bit,
      decode_scaled_8bit,
  };
  return table;
}

LOWBIT_CPU_ISA_END
