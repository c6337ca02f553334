#!/usr/bin/env bash
# The fidelity report (not part of CI: about an hour on 2 cores). Trains every
# comparison docs/RESULTS.md reports and writes it from the runs' metrics:
#   Fashion-MNIST: each 8-bit optimizer, its optim_bits=32 mode and its
#                  torch::optim counterpart, over SEEDS;
#   KJV GPT:       AdamW8bit, its 32-bit mode and torch AdamW, over TEXT_SEEDS;
#   QLoRA:         the KJV model fine-tuned on fortunes with an NF4, FP4 and
#                  fp32 base, over TEXT_SEEDS.
# Finished runs are skipped and interrupted ones resume from their checkpoints,
# so the script can be stopped and started again.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
TEXT_SEEDS=${TEXT_SEEDS:-"0"}
OUT=${OUT:-runs/fidelity}

# BIN: a folder holding lowbit-train and lowbit-fidelity-report from an
# existing build; without it the script installs what is missing and builds.
if [ -z "${BIN:-}" ]; then
  bash scripts/deps.sh
  bash scripts/build.sh -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_BENCH=OFF
  BIN=build/examples
fi

# train <run dir> <recipe> [--set ...]: one run, unless it already finished.
train() {
  local dir=$1
  shift
  if [ -f "$dir/metrics.jsonl" ] && grep -q '"type":"summary"' "$dir/metrics.jsonl"; then
    echo "== $dir: done before"
    return
  fi
  echo "== $dir"
  "$BIN/lowbit-train" "$@" --set "checkpoint.dir=$dir" --set log.progress=lines \
    --set log.every=200
}

declare -A torch_counterpart=([adam8bit]=adam [adamw8bit]=adamw [rmsprop8bit]=rmsprop)
for opt in adam8bit adamw8bit lion8bit lamb8bit rmsprop8bit; do
  for seed in $SEEDS; do
    recipe=configs/fashion_mnist_$opt.yaml
    train "$OUT/fashion/$opt/8bit/seed$seed" "$recipe" --set "train.seed=$seed"
    train "$OUT/fashion/$opt/32bit/seed$seed" "$recipe" --set "train.seed=$seed" \
      --set optimizer.optim_bits=32
    if [ -n "${torch_counterpart[$opt]:-}" ]; then
      train "$OUT/fashion/$opt/torch/seed$seed" "$recipe" --set "train.seed=$seed" \
        --set "optimizer.name=${torch_counterpart[$opt]}"
    fi
  done
done

for seed in $TEXT_SEEDS; do
  train "$OUT/kjv/adamw8bit/seed$seed" configs/kjv_gpt_adamw8bit.yaml --set "train.seed=$seed"
  train "$OUT/kjv/adamw8bit_32bit/seed$seed" configs/kjv_gpt_adamw8bit.yaml \
    --set "train.seed=$seed" --set optimizer.optim_bits=32
  train "$OUT/kjv/torch_adamw/seed$seed" configs/kjv_gpt_adamw32.yaml --set "train.seed=$seed"
done

base="$OUT/kjv/adamw8bit/seed$(echo $TEXT_SEEDS | cut -d' ' -f1)/model.pt"
for seed in $TEXT_SEEDS; do
  qlora=(configs/fortunes_qlora.yaml --set "model.init=$base" --set "train.seed=$seed")
  train "$OUT/qlora/nf4/seed$seed" "${qlora[@]}"
  train "$OUT/qlora/fp4/seed$seed" "${qlora[@]}" --set quant.type=fp4
  train "$OUT/qlora/fp32_base/seed$seed" "${qlora[@]}" --set quant.enabled=false
done

machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, libtorch $(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null || echo '?'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
"$BIN/lowbit-fidelity-report" "$OUT" docs/RESULTS.md "$machine"
