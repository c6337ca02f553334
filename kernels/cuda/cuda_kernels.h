// Host-side launchers of the CUDA kernels on raw device pointers, queued on a
// stream without waiting for it. Semantics: kernels/backend.h; the CudaBackend
// validates the operands before calling these. Internal to kernels/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace lowbit::kernels::cuda {

struct CodeTable;

// Where a launch goes and how it fills the device: grid-stride kernels take a
// few blocks per multiprocessor (enough to fill it; the once-per-block work,
// such as code tables, stays small).
struct Launch {
  cudaStream_t stream = nullptr;
  int sms = 1;  // multiprocessors of the device
  int max_blocks(int per_sm = 4) const { return per_sm * sms; }
};

// `table` receives the nearest-code table of `code` (256 floats), both on the device.
void build_code_table(const float* code, CodeTable* table, const Launch& l);

void quantize_blockwise(const void* x, DType x_type, size_t n, int blocksize, const float* code,
                        const CodeTable* table, float* absmax, uint8_t* codes,
                        const StochasticRounding& rounding, const Launch& l);
void dequantize_blockwise(const uint8_t* codes, const float* absmax, const float* code, size_t n,
                          int blocksize, void* out, DType out_type, float offset, const Launch& l);
void quantize_4bit(const void* x, DType x_type, size_t n, int blocksize, Format4 format,
                   float* absmax, uint8_t* packed, const Launch& l);
void dequantize_4bit(const uint8_t* packed, const float* absmax, size_t n, int blocksize,
                     Format4 format, void* out, DType out_type, const Launch& l);

// The operands of one optimizer step as device pointers (OptimizerOperands).
struct OptimizerPointers {
  OptimizerRule rule = OptimizerRule::Adam;
  size_t n = 0;
  int blocksize = 256;
  DType param_type = DType::F32;
  void* param = nullptr;
  const void* grad = nullptr;
  bool quantized = true;
  void* state1 = nullptr;
  float* absmax1 = nullptr;
  const float* qmap1 = nullptr;
  const CodeTable* table1 = nullptr;  // qmap1's (8-bit states)
  void* state2 = nullptr;  // null: one state
  float* absmax2 = nullptr;
  const float* qmap2 = nullptr;
  const CodeTable* table2 = nullptr;
};

void optimizer_update(const OptimizerPointers& op, const StepSlot* slot, StepFlags* flags,
                      const Launch& l);
// `partials`: 2 doubles per chunk of 256 blocks (scratch).
void optimizer_update_norms(const OptimizerPointers& op, StepSlot* slot, const StepFlags* flags,
                            double* partials, const Launch& l);
// `partials`: 2 doubles per chunk, then one more (the check's words).
void gradient_stats(const void* grad, DType grad_type, size_t n, int blocksize, StepSlot* slot,
                    double* partials, bool sum, const Launch& l);
// Chunks of 256 blocks a sum over n elements needs (the partials' length / 2).
size_t sum_chunks(size_t n, int blocksize);

// A StepItem with device pointers, passed to the kernels by value.
struct DeviceItem {
  uint64_t slot;
  StepHparams hparams;
  int64_t* step;
  float* history;
  int32_t checked;
  int32_t reserved;
};
constexpr int kItemsPerLaunch = 32;  // keeps a launch's parameters under 4 KiB
struct ItemBatch {
  DeviceItem items[kItemsPerLaunch];
  int32_t count;
};

// optimizer_prepare: found_inf is cleared, decided over every batch, then
// applied; optimizer_scale per batch.
void step_clear_found(StepFlags* flags, const Launch& l);
void step_decide(const ItemBatch& batch, bool skip_nonfinite, const StepSlot* slots,
                 StepFlags* flags, const Launch& l);
void step_apply(const ItemBatch& batch, bool first_batch, StepSlot* slots, StepFlags* flags,
                const Launch& l);
void step_scale(const ItemBatch& batch, StepSlot* slots, const StepFlags* flags, const Launch& l);

}  // namespace lowbit::kernels::cuda
