// Quantizes a tensor to NF4 through the installed headers and library and
// checks the round trip: proof that find_package(lowbit) is usable.
#include <lowbit/quant/metrics.h>
#include <lowbit/quant/quantize.h>

#include <torch/torch.h>

#include <iostream>

int main() {
  torch::manual_seed(0);
  const torch::Tensor w = torch::randn({256, 256});
  auto [packed, state] = lowbit::quant::quantize_4bit(w);
  const double err = lowbit::quant::mean_abs_error(w, lowbit::quant::dequantize_4bit(packed, state));
  std::cout << "consumer: NF4 round trip mean abs error " << err << "\n";
  return err < 0.08 ? 0 : 1;  // NF4 block 64 on N(0,1): ~0.073 (bitsandbytes' level)
}
