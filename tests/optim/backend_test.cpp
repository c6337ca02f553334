// The same training on the CPU and on the OpenCL backend: parameters agree to
// float rounding after 20 steps, for every optimizer, 8-bit and 32-bit, with
// the reductions (percentile clipping, LAMB's trust ratio) in play.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <torch/torch.h>

#include "optim/optim.h"
#include "tests/kernels/backends.h"
#include "tests/optim/optim_test_util.h"

namespace lowbit {
namespace {

TEST(Backends, CpuAndOpenClAgreeAfterTwentySteps) {
  LOWBIT_REQUIRE_OPENCL(ocl);
  for (testing::Kind kind : testing::all_kinds())
    for (int64_t bits : {8, 32}) {
      testing::Setup s;
      s.optim_bits = bits;
      s.percentile_clipping = 50;
      auto on_cpu = testing::make_params(5);
      auto on_ocl = testing::make_params(5);
      auto cpu_opt = testing::make_optimizer(kind, on_cpu, s);
      auto ocl_opt = testing::make_optimizer(kind, on_ocl, s, ocl);
      for (int t = 0; t < 20; ++t) {
        testing::set_grads(on_cpu, 5, t);
        testing::set_grads(on_ocl, 5, t);
        cpu_opt->step();
        ocl_opt->step();
      }
      // The kernels agree bit for bit (tests/kernels); only the reductions
      // sum in another order (float partial sums per block), which moves the
      // clipping factor and the trust ratio by ~1e-7 relative: 20 steps of that
      // stay far inside 1e-6 of the largest parameter.
      const double err = testing::max_relative_error(on_ocl, on_cpu);
      EXPECT_LE(err, 1e-6) << testing::kind_name(kind) << " " << bits << "-bit";
      std::printf("%s %lld-bit: CPU vs OpenCL after 20 steps, max |diff| / max |p| = %.3g\n",
                  testing::kind_name(kind).c_str(), static_cast<long long>(bits), err);
    }
}

}  // namespace
}  // namespace lowbit
