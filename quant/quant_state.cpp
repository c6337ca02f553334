#include "quant/quant_state.h"

namespace lowbit::quant {

void check_blocksize(int64_t blocksize, Format format, const std::string& what) {
  const int64_t min_blocksize = format_info(format).min_blocksize;
  TORCH_CHECK(blocksize >= min_blocksize && blocksize <= kernels::kMaxBlocksize &&
                  (blocksize & (blocksize - 1)) == 0,
              what, " ", blocksize, " is not supported; expected a power of two in [",
              min_blocksize, ", ", kernels::kMaxBlocksize, "]");
}

QuantState QuantState::to(const torch::Device& device) const {
  QuantState out = *this;
  if (absmax.defined()) out.absmax = absmax.to(device);
  if (code.defined()) out.code = code.to(device);
  if (nested) out.nested = std::make_shared<QuantState>(nested->to(device));
  return out;
}

}  // namespace lowbit::quant
