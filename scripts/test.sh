#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every test.
# OpenCL tests run on PoCL (installed by deps.sh) and must not be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh -DLOWBIT_BUILD_TESTS=ON
export LOWBIT_REQUIRE_OPENCL=1
# CTest runs one test process per core; each gets two OpenMP threads that sleep
# when idle. (With every process spinning a thread per core, the suite took
# over 300 s instead of 16 s on a 16-core machine.)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# (nproc alone would count OMP_NUM_THREADS, not the cores.)
ctest --test-dir build --output-on-failure -j"$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
