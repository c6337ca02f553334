#!/usr/bin/env bash
# Debian 13 (trixie) in a chroot made by debootstrap under build-trixie/root:
# a newer GCC and libtorch than the Debian 12 machine this project builds on.
#   scripts/trixie.sh kernels
#     The torch-free layer (lowbit_kernels and lowbit_kernel_tests: the
#     generic, AVX2 and AVX-512 CPU paths, no OpenCL) built with GCC 14 and
#     its tests run (CI's last stage). GCC 14 expands `_Pragma` in macros
#     differently from GCC 12 (kernels/cpu/isa_region.h), so CI builds both.
#   scripts/trixie.sh bench [bench_optim arguments]
#     bench_optim built against trixie's libtorch 2.6 and run: its
#     torch_fused rows (torch's fused CPU Adam / AdamW, at::_fused_adam_ /
#     at::_fused_adamw_) need libtorch 2.4 or later, which Debian 12 lacks.
# Needs root (debootstrap, chroot) and a Debian mirror (DEBIAN_MIRROR,
# default deb.debian.org). JOBS (default: the core count) sets the parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
  kernels) packages=(g++ cmake ninja-build googletest libeigen3-dev) ;;
  bench) packages=(g++ cmake ninja-build libeigen3-dev libtorch-dev libbenchmark-dev
                   libyaml-cpp-dev nlohmann-json3-dev) ;;
  *) echo "usage: scripts/trixie.sh kernels | bench [bench_optim arguments]" >&2; exit 2 ;;
esac
shift
if [ "$(id -u)" != 0 ]; then
  echo "trixie.sh: run as root (it uses debootstrap and chroot)" >&2
  exit 1
fi
root=$PWD/build-trixie/root
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
jobs=${JOBS:-$(nproc)}
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends debootstrap
fi

# /proc inside the chroot (apt's scripts and OpenMP read it), unmounted on exit.
mounted=0
cleanup() { if [ "$mounted" = 1 ]; then umount "$root/proc" || true; fi; }
trap cleanup EXIT
if [ ! -x "$root/usr/bin/apt-get" ]; then
  rm -rf "$root"
  debootstrap --variant=minbase trixie "$root" "$mirror"
  chroot "$root" apt-get update -q
fi
if mount -t proc proc "$root/proc"; then mounted=1; fi
# (An older root's package lists may name versions the mirror has dropped.)
install_packages() { chroot "$root" apt-get install -y -q --no-install-recommends "${packages[@]}"; }
install_packages || { chroot "$root" apt-get update -q && install_packages; }
chroot "$root" g++ --version | head -1

# The working tree without its build folders and .git.
rm -rf "$root/src"
mkdir -p "$root/src"
tar --exclude='./build*' --exclude=./.git -cf - . | tar -xf - -C "$root/src"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
if [ "$mode" = kernels ]; then
  chroot "$root" /bin/bash -c "
    set -euo pipefail
    cmake -S /src -B /build-kernels -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_WERROR=ON \
      -DLOWBIT_KERNELS_ONLY=ON -DLOWBIT_OPENCL=OFF -DLOWBIT_GTEST_SOURCE_DIR=/usr/src/googletest
    cmake --build /build-kernels -j$jobs
    OMP_NUM_THREADS=\${OMP_NUM_THREADS:-2} ctest --test-dir /build-kernels --output-on-failure -j$jobs"
else
  chroot "$root" /bin/bash -c "
    set -euo pipefail
    { cmake -S /src -B /build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_TESTS=OFF \
        -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_OPENCL=OFF &&
      cmake --build /build-bench -j$jobs --target bench_optim; } > /build-bench.log 2>&1 ||
      { tail -40 /build-bench.log; exit 1; }"
  chroot "$root" /build-bench/bench/bench_optim "$@"
fi
