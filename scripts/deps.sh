#!/usr/bin/env bash
# Installs (as root, from Debian) whatever lowbit needs that is missing.
# Runs apt-get only when something is missing, so repeated runs are instant.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libgloo-dev libopenblas0-openmp libeigen3-dev libyaml-cpp-dev nlohmann-json3-dev zlib1g-dev
  libicu-dev libsentencepiece-dev sentencepiece
  ocl-icd-opencl-dev opencl-headers opencl-clhpp-headers pocl-opencl-icd
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist bible-kjv fortunes fortune-mod
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "lowbit: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "lowbit: run as root (or with sudo) to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
