#include "optim/state_options.h"

#include <torch/torch.h>

#include "kernels/backend.h"

namespace lowbit::optim {
namespace {

bool is_power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

}  // namespace

void StateSettings::check(const char* optimizer) const {
  TORCH_CHECK(optim_bits == 8 || optim_bits == 32, optimizer, ": optim_bits is ", optim_bits,
              "; expected 8 (blockwise 8-bit states) or 32 (float32 states)");
  TORCH_CHECK(min_8bit_size >= 0, optimizer, ": min_8bit_size is ", min_8bit_size,
              "; expected a number of elements >= 0");
  TORCH_CHECK(is_power_of_two(block_size) && block_size >= kernels::kMinBlocksize8bit &&
                  block_size <= kernels::kMaxBlocksize,
              optimizer, ": block_size is ", block_size, "; expected a power of two in [",
              kernels::kMinBlocksize8bit, ", ", kernels::kMaxBlocksize, "]");
  TORCH_CHECK(percentile_clipping >= 0 && percentile_clipping <= 100, optimizer,
              ": percentile_clipping is ", percentile_clipping,
              "; expected a percentile in [0, 100] (100 disables clipping)");
  TORCH_CHECK(max_unorm >= 0 && std::isfinite(max_unorm), optimizer, ": max_unorm is ", max_unorm,
              "; expected a finite value >= 0 (0 disables it)");
}

void StateSettings::save(torch::serialize::OutputArchive& archive) const {
  archive.write("optim_bits", c10::IValue(optim_bits));
  archive.write("min_8bit_size", c10::IValue(min_8bit_size));
  archive.write("block_size", c10::IValue(block_size));
  archive.write("percentile_clipping", c10::IValue(percentile_clipping));
  archive.write("max_unorm", c10::IValue(max_unorm));
}

void StateSettings::load(torch::serialize::InputArchive& archive) {
  c10::IValue v;
  if (archive.try_read("optim_bits", v)) optim_bits = v.toInt();
  if (archive.try_read("min_8bit_size", v)) min_8bit_size = v.toInt();
  if (archive.try_read("block_size", v)) block_size = v.toInt();
  if (archive.try_read("percentile_clipping", v)) percentile_clipping = v.toInt();
  if (archive.try_read("max_unorm", v)) max_unorm = v.toDouble();
}

}  // namespace lowbit::optim
