#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every test.
# OpenCL tests run on PoCL (installed by deps.sh) and must not be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh -DLOWBIT_BUILD_TESTS=ON
export LOWBIT_REQUIRE_OPENCL=1
ctest --test-dir build --output-on-failure -j"$(nproc)"
