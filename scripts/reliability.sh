#!/usr/bin/env bash
# CI's reliability stage (after the README's test command): the sanitizer
# build of scripts/sanitize.sh (clang, ASan + UBSan: the kernels on the CPU
# and on PoCL, every parser's tests, every committed fuzz input), then every
# fuzz target for FUZZ_SECONDS (default 30) from its seeds (scripts/fuzz.sh).
# Installs clang, its sanitizer and libFuzzer runtimes and its OpenMP when
# missing (as root, from Debian). Prints each stage's time.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(clang libclang-rt-dev libomp-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "reliability: run as root (or with sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

stage() {
  local name=$1 start
  shift
  start=$(date +%s)
  "$@"
  echo "reliability: $name took $(( $(date +%s) - start )) s"
}
stage "sanitized build and tests" bash scripts/sanitize.sh
stage "fuzzing" bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
