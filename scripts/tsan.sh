#!/usr/bin/env bash
# ThreadSanitizer over the OpenMP kernels: the torch-free kernel tests built
# with clang -fsanitize=thread into build-tsan/, on LLVM's OpenMP runtime with
# its Archer tool (libarcher, package libomp-14-dev), which tells TSan about
# OpenMP's barriers, reductions and task edges; without it TSan cannot follow
# the runtime and reports its internal synchronisation as races. lowbit has
# no std::thread code (multi-process training uses processes), so the OpenMP
# kernels are all the threads there are. Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
cxx="${CXX:-clang++}"
command -v "$cxx" >/dev/null || { echo "tsan: $cxx not found (apt-get install clang)" >&2; exit 2; }
archer=$(ls /usr/lib/llvm-*/lib/libarcher.so 2>/dev/null | sort -V | tail -1 || true)
[ -n "$archer" ] || { echo "tsan: libarcher.so not found (apt-get install libomp-dev)" >&2; exit 2; }

cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Release \
  "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -gline-tables-only -DNDEBUG" -DCMAKE_CXX_COMPILER="$cxx" \
  -DLOWBIT_SANITIZE=thread -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_BUILD_BENCH=OFF -DLOWBIT_CUDA=OFF \
  >/dev/null
cmake --build build-tsan --target lowbit_kernel_tests -j"$(nproc)"

export OMP_TOOL_LIBRARIES="$archer" ARCHER_OPTIONS="${ARCHER_OPTIONS:-verbose=1}"
# PoCL's own threads are not instrumented: OpenCL stays in the ASan run, and
# an empty ICD directory hides it here (the CPU kernels are what TSan checks).
OCL_ICD_VENDORS=$(mktemp -d)
export OCL_ICD_VENDORS LOWBIT_REQUIRE_OPENCL=0
trap 'rmdir "$OCL_ICD_VENDORS"' EXIT
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 ignore_noninstrumented_modules=1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" OMP_WAIT_POLICY=PASSIVE
build-tsan/tests/lowbit_kernel_tests \
  --gtest_filter='ThreadCount.*:KernelBackends.*:OptimizerKernels.*:GemmInt8Kernels.*:Matmul4bit.*:QuantizeEdgeCases.*'
echo "tsan: clean"
