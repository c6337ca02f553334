// The CPU implementation of the kernels contract on raw host pointers: OpenMP
// over blocks (a block never splits across threads), inner loops written for
// the compiler's vectoriser, no allocation. Semantics: kernels/backend.h.
// Everything but copy is built once per instruction-set path
// (kernels/cpu/isa_region.h); CpuBackend calls the chosen path through
// kernels/cpu/isa_kernels.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/isa_region.h"

namespace lowbit::kernels::cpu {

// memcpy split across the OpenMP threads (the CPU roofline).
void copy(const uint8_t* src, uint8_t* dst, size_t bytes);

}  // namespace lowbit::kernels::cpu

LOWBIT_CPU_ISA_BEGIN

void quantize_blockwise(const void* x, DType x_type, size_t n, int blocksize, const float* code,
                        float* absmax, uint8_t* codes, const StochasticRounding& rounding);

void dequantize_blockwise(const uint8_t* codes, const float* absmax, const float* code, size_t n,
                          int blocksize, void* out, DType out_type, float offset);

void quantize_4bit(const void* x, DType x_type, size_t n, int blocksize, Format4 format,
                   float* absmax, uint8_t* packed);

void dequantize_4bit(const uint8_t* packed, const float* absmax, size_t n, int blocksize,
                     Format4 format, void* out, DType out_type);

// Optimizers (optimizer_update.cpp). The operands' buffers are CpuBackend buffers.
size_t optimizer_update(const OptimizerOperands& op, const OptimizerArgs& args);
UpdateNorms optimizer_update_norms(const OptimizerOperands& op, const OptimizerArgs& args);
// `sum` false: only `finite` is wanted (sum_sq may be 0), as Backend::gradient_stats.
GradientStats gradient_stats(const void* grad, DType grad_type, size_t n, int blocksize, bool sum);

LOWBIT_CPU_ISA_END
