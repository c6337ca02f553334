// QLoRA on CUDA: a Linear4bit quantized on the CPU and moved to the GPU, or
// quantized there, holds the same codes and computes what the CPU computes
// (to the rounding of the compute dtype); a model moved to CUDA before or
// after quantize_model / apply_lora trains on the GPU; adapters and quantized
// weights saved from the GPU load on the CPU bit for bit; a Linear8bit moved
// to the GPU computes the CPU's bits; mixed devices are refused with a clear
// message. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <string>

#include <torch/torch.h>

#include "lora/apply_lora.h"
#include "lora/linear4bit.h"
#include "lora/linear8bit.h"
#include "lora/peft_io.h"
#include "lora/quantize_model.h"
#include "lora/quantized_model_io.h"
#include "optim/optim.h"
#include "quant/quantize.h"
#include "tests/lora/test_models.h"
#include "tests/support/cuda.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit {
namespace {

using testing::cuda_device;

// max |got - want| / max |want|.
double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  const torch::Tensor g = got.detach().cpu().to(torch::kFloat64);
  const torch::Tensor w = want.detach().cpu().to(torch::kFloat64);
  return (g - w).abs().max().item<double>() / w.abs().max().item<double>();
}

TEST(CudaQLoRA, QuantizingOnTheGpuGivesTheCpuCodes) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  torch::manual_seed(1);
  const torch::Tensor w = torch::randn({96, 200});
  for (auto format : {quant::Format::NF4, quant::Format::FP4})
    for (bool dq : {false, true}) {
      quant::Quantize4bitOptions o;
      o.format = format;
      o.double_quant = dq;
      const auto [pc, sc] = quant::quantize_4bit(w, o);
      const auto [pg, sg] = quant::quantize_4bit(w.to(cuda_device()), o);
      EXPECT_EQ(pg.device(), cuda_device());
      EXPECT_TRUE(torch::equal(pg.cpu(), pc));
      EXPECT_TRUE(torch::equal(sg.absmax.cpu(), sc.absmax));
      EXPECT_EQ(sg.offset, sc.offset);
      EXPECT_TRUE(torch::equal(quant::dequantize_4bit(pg, sg).cpu(), quant::dequantize_4bit(pc, sc)));
    }
  const auto [qc, tc] = quant::quantize_blockwise(w);
  const auto [qg, tg] = quant::quantize_blockwise(w.to(cuda_device()));
  EXPECT_TRUE(torch::equal(qg.cpu(), qc));
  EXPECT_TRUE(torch::equal(tg.absmax.cpu(), tc.absmax));
}

TEST(CudaQLoRA, Linear4bitMovedToTheGpuComputesWhatTheCpuDoes) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  torch::manual_seed(2);
  torch::nn::Linear linear(torch::nn::LinearOptions(256, 80).bias(true));
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16})
    for (int64_t m : {1, 8, 100}) {
      const auto options = lora::Linear4bitOptions().compute_dtype(dtype);
      lora::Linear4bit on_cpu(linear, options);
      lora::Linear4bit on_gpu(linear, options);
      on_gpu->to(cuda_device());
      EXPECT_TRUE(torch::equal(on_gpu->packed_weight().cpu(), on_cpu->packed_weight()));
      const torch::Tensor x = torch::randn({m, 256});
      const torch::Tensor xc = x.clone().set_requires_grad(true);
      const torch::Tensor xg = x.to(cuda_device()).set_requires_grad(true);
      const torch::Tensor yc = on_cpu->forward(xc), yg = on_gpu->forward(xg);
      EXPECT_EQ(yg.device(), cuda_device());
      // float32: both sum exact products in float (~1e-6 of the largest
      // output). float16 / bfloat16: the input is rounded to the compute
      // dtype on both; the GPU's tensor cores also round the decoded weight
      // (2^-9 relative for bfloat16) and the output once: a few 2^-8 of the
      // largest output at most.
      const double tol = dtype == torch::kFloat32 ? 1e-5 : (dtype == torch::kFloat16 ? 4e-3 : 3e-2);
      const std::string label = std::string(c10::toString(dtype)) + " m" + std::to_string(m);
      EXPECT_LE(relative_error(yg, yc), tol) << label << " forward";
      yc.pow(2).sum().backward();
      yg.pow(2).sum().backward();
      EXPECT_LE(relative_error(xg.grad(), xc.grad()), 2 * tol) << label << " input gradient";
      EXPECT_TRUE(torch::equal(on_gpu->bias.cpu(), on_cpu->bias)) << label << " bias moved";
    }
}

// gemm_int8 promises the same float operations on every backend, so the
// int8 path agrees bit for bit; with the threshold the outlier columns' float
// product goes through each device's matmul (float rounding, 1e-6).
TEST(CudaQLoRA, Linear8bitMovedToTheGpuComputesTheCpuBits) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  torch::manual_seed(6);
  torch::nn::Linear linear(torch::nn::LinearOptions(300, 70).bias(true));
  for (double threshold : {0.0, 6.0}) {
    const auto options = lora::Linear8bitOptions().threshold(threshold);
    lora::Linear8bit on_cpu(linear, options), on_gpu(linear, options);
    on_gpu->to(cuda_device());
    torch::Tensor x = torch::randn({9, 300});
    x[2][17] = 40.0f;
    const torch::Tensor xc = x.clone().set_requires_grad(true);
    const torch::Tensor xg = x.to(cuda_device()).set_requires_grad(true);
    const torch::Tensor yc = on_cpu->forward(xc), yg = on_gpu->forward(xg);
    EXPECT_EQ(yg.device(), cuda_device());
    if (threshold == 0.0) {
      EXPECT_TRUE(torch::equal(yg.cpu(), yc));
    }
    EXPECT_LE(relative_error(yg, yc), 1e-6) << "threshold " << threshold;
    yc.pow(2).sum().backward();
    yg.pow(2).sum().backward();
    EXPECT_LE(relative_error(xg.grad(), xc.grad()), 1e-5) << "threshold " << threshold;
  }
}

// TinyNet's linears quantized and adapted, ending on the GPU: moved there
// first (quantized and adapted on the GPU) or last (both on the CPU).
lowbit::testing::TinyNet qlora_net(bool move_first, lora::LoraConfig& config) {
  torch::manual_seed(3);
  lowbit::testing::TinyNet net(24, 64, 10);
  if (move_first) net->to(cuda_device());
  lora::QuantizeConfig q;
  q.modules_to_not_convert = {"lm_head"};
  lora::quantize_model(*net, q);
  config.r = 4;
  config.lora_alpha = 8;
  config.target_modules = {"in_proj", "mlp\\.fc1", "mlp\\.fc2"};
  config.dtype = torch::kFloat32;
  torch::manual_seed(4);  // the same adapter initialisation either way
  lora::apply_lora(*net, config);
  if (!move_first) net->to(cuda_device());
  return net;
}

TEST(CudaQLoRA, ModelsMovedBeforeOrAfterQuantizingTrainAlikeOnTheGpu) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  lora::LoraConfig config_a, config_b;
  auto a = qlora_net(true, config_a);
  auto b = qlora_net(false, config_b);
  // Quantized on the GPU or on the CPU: the same codes (the kernels promise
  // identical bits), so the same model.
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& item : a->named_buffers())
    EXPECT_TRUE(torch::equal(item.value().cpu(), b->named_buffers()[item.key()].cpu())) << item.key();
  std::vector<torch::Tensor> train_a, train_b;
  for (const auto& item : pa)
    if (item.value().requires_grad()) {
      EXPECT_EQ(item.value().device(), cuda_device()) << item.key();
      train_a.push_back(item.value());
      train_b.push_back(pb[item.key()]);
    }
  optim::AdamW8bit opt_a(train_a, optim::AdamW8bitOptions(1e-2).min_8bit_size(64));
  optim::AdamW8bit opt_b(train_b, optim::AdamW8bitOptions(1e-2).min_8bit_size(64));
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({16, 24}).to(cuda_device());
  double first = 0, last = 0;
  for (int t = 0; t < 30; ++t) {
    for (auto* pair : {&a, &b}) {
      auto& net = *pair;
      auto& opt = pair == &a ? opt_a : opt_b;
      opt.zero_grad();
      const torch::Tensor loss = net->forward(x).pow(2).mean();
      loss.backward();
      opt.step();
      if (pair == &a) (t == 0 ? first : last) = loss.item<double>();
    }
  }
  EXPECT_LT(last, 0.5 * first) << "the adapters learn on the GPU";
  for (size_t i = 0; i < train_a.size(); ++i)
    EXPECT_TRUE(torch::equal(train_a[i].cpu(), train_b[i].cpu())) << "adapter " << i;
}

TEST(CudaQLoRA, FilesSavedFromTheGpuLoadOnTheCpu) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  lowbit::testing::ScratchDir dir;
  lora::LoraConfig config;
  auto gpu_net = qlora_net(true, config);
  for (auto& p : gpu_net->parameters())
    if (p.requires_grad()) {
      torch::NoGradGuard no_grad;
      p.add_(torch::randn_like(p));  // adapters that differ from their initialisation
    }
  lora::save_adapter(*gpu_net, dir.file("adapter"), config);
  // The quantized base without adapters: a fresh GPU model.
  torch::manual_seed(3);
  lowbit::testing::TinyNet base(24, 64, 10);
  base->to(cuda_device());
  lora::QuantizeConfig q;
  q.modules_to_not_convert = {"lm_head"};
  lora::quantize_model(*base, q);
  lora::save_quantized_model(*base, dir.file("base.safetensors"));

  torch::manual_seed(99);
  lowbit::testing::TinyNet cpu_net(24, 64, 10);
  lora::load_quantized_model(*cpu_net, dir.file("base.safetensors"));
  lora::load_adapter(*cpu_net, dir.file("adapter"));
  const auto gpu_params = gpu_net->named_parameters();
  for (const auto& item : cpu_net->named_parameters())
    EXPECT_TRUE(torch::equal(item.value(), gpu_params[item.key()].cpu())) << item.key();
  const auto gpu_buffers = gpu_net->named_buffers();
  for (const auto& item : cpu_net->named_buffers())
    EXPECT_TRUE(torch::equal(item.value(), gpu_buffers[item.key()].cpu())) << item.key();
  // And back onto the GPU: the CPU model moved there computes like the original.
  cpu_net->to(cuda_device());
  const torch::Tensor x = torch::randn({4, 24}).to(cuda_device());
  EXPECT_TRUE(torch::equal(cpu_net->forward(x), gpu_net->forward(x)));
}

TEST(CudaQLoRA, MixedDevicesAreRefusedClearly) {
  LOWBIT_REQUIRE_CUDA_DEVICE();
  torch::nn::Linear linear(64, 8);
  lora::Linear4bit layer(linear);
  layer->to(cuda_device());
  testing::expect_error([&] { layer->forward(torch::randn({2, 64})); },
                        "but the 4-bit weight is on cuda:0");
  const auto quantized = quant::quantize_4bit(torch::randn({64}).to(cuda_device()));
  const torch::Tensor& packed = quantized.first;
  const quant::QuantState& state = quantized.second;
  quant::QuantState on_cpu = state.to(torch::kCPU);
  testing::expect_error([&] { quant::dequantize_4bit(packed, on_cpu); }, "move them together");
}

}  // namespace
}  // namespace lowbit
