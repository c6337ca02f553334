// main() of the test programs that link libtorch: where the process's OpenBLAS chose kernels
// without AVX2 on a CPU that has it, the program starts again with wide ones
// (kernels/blas_core.h; on an Emerald Rapids Xeon the trainer tests take half the time), then
// GoogleTest runs the tests.
#include <gtest/gtest.h>

#include "kernels/blas_core.h"

int main(int argc, char** argv) {
  lowbit::kernels::reload_with_wider_blas(argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
