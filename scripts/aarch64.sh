#!/usr/bin/env bash
# aarch64: cross-builds the torch-free layer (lowbit_kernels and
# lowbit_kernel_tests: the generic and NEON CPU paths, no OpenCL) with Debian's
# cross compiler into ./build-aarch64 and runs the kernel tests under
# qemu-user. Installs what is missing (as root, from Debian). Extra arguments
# go to the CMake configure step. Under qemu the tests prove results, not
# speed. JOBS (default: the core count) sets the build's parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
[ -f /usr/src/googletest/CMakeLists.txt ] || need+=(googletest)
[ -f /usr/share/eigen3/cmake/Eigen3Config.cmake ] || need+=(libeigen3-dev)
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "aarch64.sh: missing ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi

launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B build-aarch64 -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
  -DLOWBIT_KERNELS_ONLY=ON -DLOWBIT_OPENCL=OFF \
  -DLOWBIT_GTEST_SOURCE_DIR=/usr/src/googletest -DEigen3_DIR=/usr/share/eigen3/cmake \
  "${launcher[@]}" "$@"
jobs="${JOBS:-$(nproc)}"
cmake --build build-aarch64 -j"$jobs"
# One qemu process per test; each gets two OpenMP threads that sleep when idle
# (as scripts/test.sh runs the native suite).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
ctest --test-dir build-aarch64 --output-on-failure -j"$jobs"
