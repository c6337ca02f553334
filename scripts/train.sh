#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs
# lowbit-train on its default recipe with real data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_BENCH=OFF
./build/examples/lowbit-train "$@"
