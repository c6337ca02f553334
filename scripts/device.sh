#!/usr/bin/env bash
# The GPU check in one go, on a machine with an NVIDIA GPU, CUDA (nvcc) and a
# CUDA-enabled libtorch (PyTorch's, found through python3): builds lowbit with
# the CUDA backend, runs every test with CUDA and NVIDIA's OpenCL required,
# then the GPU benchmarks. Logs and benchmark JSON go to $OUT (default
# build-cuda/out); the last lines printed are the summary.
#   scripts/device.sh [all|build|test|bench|opencl|cpu|nproc|ab|multigpu ...]   (default: all)
# Several steps run in one call, in the order of this script (e.g. `build test opencl`).
# opencl (not part of all): NVIDIA's OpenCL on the GPU: each kernel's stack frame
# and spills from the compiler's report (LOWBIT_OPENCL_DUMP), the optimizer updates
# and gradient_stats at 256M parameters against the device copy, bench_quantize at
# 256M values, and the OpenCL 4-bit matmul rows of bench_cuda beside torch's linear
# (LOWBIT_BENCH_DTYPE: bf16, the default, or f16) and the device's fp32 FMA peak.
# cpu (not part of all): the host's CPU figures, on all its cores: bench_optim at
# 64M on the AVX-512 and the AVX2 path (torch's fused AdamW in the same run), then
# nproc: the KJV recipe widened to 3.2M parameters on 1, 2, 4 and 8 Gloo processes
# (and 2, 4, 8 with ZeRO-1), cores / N threads each.
# ab (not part of all): a same-call A/B of the OpenCL kernels on NVIDIA's device, alternating
# the kernels/ folder in LOWBIT_AB_KERNELS (another commit's: `git archive <commit> kernels |
# tar -x -C <dir>`, then <dir>/kernels; they must take this host's kernel arguments) and this
# tree's, LOWBIT_AB_PASSES times (default 2): the optimizer update at 256M (bench_optim,
# LOWBIT_AB_OPTIM filter), the quantizers at 256M values, and the 4-bit matmul's OpenCL rows
# (bench_cuda, LOWBIT_AB_GEMM filter; default batch 64, bf16).
# multigpu (not part of all; issue 20): a Llama-shaped 8x2048 stack and the QLoRA
# recipe on 1 GPU and one rank per GPU (NCCL), ZeRO-1's checkpoint resumed on 1
# GPU and on the CPU; on a machine of one GPU, two ranks share it (Gloo).
# LOWBIT_CMAKE_ARGS: extra configure arguments (e.g. -DLOWBIT_GLOO_INCLUDE_DIR=<the folder
# holding gloo/>, where the Python wheel's libtorch ships no Gloo headers).
# LOWBIT_DEBS: a folder of Debian packages to unpack first, for machines that
# cannot install them (made with `apt-get download dataset-fashion-mnist
# bible-kjv bible-kjv-text fortunes fortunes-min fortune-mod librecode0`: the
# data sets, and strfile for the fortune tests).
# LOWBIT_BENCH_FILTER: a Google Benchmark filter for bench_cuda.
# LOWBIT_BUILD_TARGETS: build only these targets (e.g. "lowbit_kernel_tests bench_cuda",
# about half the full build's time) for a call that only tries kernels.
# LOWBIT_TEST_TIMEOUT: ctest's limit per test in seconds (default 900).
set -uo pipefail
cd "$(dirname "$0")/.."
steps=" ${*:-all} "
# Whether step $1 was asked for (`all`: build, test and bench).
want() {
  [[ "$steps" == *" $1 "* ]] || { [[ "$steps" == *" all "* ]] && [[ " build test bench " == *" $1 "* ]]; }
}
build=build-cuda
out=${OUT:-$build/out}
mkdir -p "$out"
summary=()
note() { summary+=("$*"); echo "== $*"; }
# bench_quantize's name for NVIDIA's OpenCL device (opencl:N), empty where there is none.
nvidia_opencl() {
  "$build/bench/bench_quantize" --benchmark_filter='^$' 2>/dev/null | grep -m1 NVIDIA | cut -d' ' -f1
}

if [ -d "${LOWBIT_DEBS:-}" ]; then
  for f in "$LOWBIT_DEBS"/*.deb; do dpkg -x "$f" / || exit 1; done
fi
# NVIDIA's OpenCL driver, beside PoCL (the driver ships the library, not its ICD file).
if [ -w /etc ] && [ ! -e /etc/OpenCL/vendors/nvidia.icd ]; then
  mkdir -p /etc/OpenCL/vendors
  echo libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd
fi

if want build; then
  torch_cmake=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "share", "cmake"))')
  start=$(date +%s)
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_cmake" \
    -DLOWBIT_CUDA=ON -DLOWBIT_BUILD_TESTS=ON ${LOWBIT_CMAKE_ARGS:-} > "$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
  # -k 0: a failing target does not stop the others (their tests still run).
  targets=()
  for t in ${LOWBIT_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
  if ! cmake --build "$build" -j"$(nproc)" "${targets[@]}" -- -k 0 > "$out/build.log" 2>&1; then
    grep -B2 -A12 -m5 'error' "$out/build.log" | head -60
    note "build: FAILED (see build.log)"
  fi
  note "build: $(( $(date +%s) - start )) s ($(grep -o 'CUDA backend [A-Z]*' "$out/configure.log"))"
fi

if want test; then
  start=$(date +%s)
  export LOWBIT_REQUIRE_OPENCL=1 LOWBIT_REQUIRE_CUDA=1
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
  ctest --test-dir "$build" --output-on-failure -j8 --timeout "${LOWBIT_TEST_TIMEOUT:-900}" > "$out/test.log" 2>&1
  rc=$?
  grep -E "tests passed|tests failed|\(Failed\)|\(Timeout\)|\*\*\*" "$out/test.log" | tail -30
  note "tests: rc $rc in $(( $(date +%s) - start )) s: $(grep -E 'tests passed' "$out/test.log")"
fi

if want bench; then
  nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader > "$out/gpu.txt"
  "$build/bench/bench_cuda" --benchmark_filter="${LOWBIT_BENCH_FILTER:-.}" \
    --benchmark_repetitions="${LOWBIT_BENCH_REPETITIONS:-3}" --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json > "$out/bench_cuda.txt" 2>&1
  note "bench_cuda: rc $? ($(cat "$out/gpu.txt"))"
  # The ratio tables are what the console output ends with.
  sed -n '/^op  *group/,$p' "$out/bench_cuda.txt"
fi

if want opencl; then
  # The compiler's report for every program the kernel tests build on NVIDIA's OpenCL: an
  # array the compiler could not keep in registers shows as a stack frame (2026-12-05: 48 bytes
  # in the update cost a quarter of its speed).
  dump="$out/opencl_dump"
  rm -rf "$dump" && mkdir -p "$dump"
  LOWBIT_OPENCL_DUMP="$dump" LOWBIT_OPENCL_DEVICE=NVIDIA "$build/tests/lowbit_kernel_tests" \
    --gtest_filter='OptimizerKernels.*:KernelBackends.*:Matmul4bit.*' > "$out/opencl_dump_tests.txt" 2>&1
  framed=$(grep -l NVIDIA "$dump"/*.log 2>/dev/null | xargs -r cat | awk '/Function properties for/ {k = $NF}
    /stack frame/ && ($3 != 0 || $7 != 0) {print "  " k ": " $0}')
  [ -n "$framed" ] && echo "$framed" | sort | uniq -c
  note "NVIDIA OpenCL kernel builds with a stack frame or spills: $(printf '%s' "$framed" | grep -c .)"
  LOWBIT_BENCH_SIZES=256M "$build/bench/bench_optim" --benchmark_filter='opencl_resident' \
    --benchmark_repetitions=3 --benchmark_report_aggregates_only=true > "$out/bench_optim_opencl.txt" 2>&1
  note "bench_optim, 256M on the first OpenCL GPU: rc $?"
  sed -n '/^op  *group/,$p' "$out/bench_optim_opencl.txt"
  # The quantizers against the device copy at 256M values, and the 4-bit matmul and its input
  # gradient (kernel level, device buffers) against torch's cuBLAS linear in one run.
  nvidia=$(nvidia_opencl)
  LOWBIT_BENCH_N=$((256 << 20)) "$build/bench/bench_quantize" --benchmark_filter="/${nvidia:-none}/" \
    > "$out/bench_quantize_opencl.txt" 2>&1
  note "bench_quantize on $nvidia: rc $?"
  sed -n '/^op  *group/,$p' "$out/bench_quantize_opencl.txt"
  "$build/bench/bench_cuda" --benchmark_filter="^((torch_linear|opencl_nf4|opencl_nf4_dx)/linear/.*/${LOWBIT_BENCH_DTYPE:-bf16}/|opencl_fma/)" \
    > "$out/bench_cuda_opencl.txt" 2>&1
  note "bench_cuda, OpenCL 4-bit matmul rows: rc $?"
  sed -n '/^op  *group/,$p' "$out/bench_cuda_opencl.txt"
  # The peak has no baseline row; its TFLOP/s counter is on the console line.
  sed 's/\x1b\[[0-9;]*m//g' "$out/bench_cuda_opencl.txt" | grep -m1 '^opencl_fma/'
fi

if want cpu; then
  for isa in avx512 avx2; do
    LOWBIT_CPU_ISA=$isa LOWBIT_BENCH_SIZES=64M "$build/bench/bench_optim" \
      --benchmark_filter='^(memcpy|torch|torch_fused|lowbit8|lowbit8_skipblocks)/[a-z]+/64M/threads' \
      > "$out/bench_optim_$isa.txt" 2>&1
    note "bench_optim ($isa path): rc $?"
    sed -n '/^op  *group/,$p' "$out/bench_optim_$isa.txt"
  done
fi

if want cpu || want nproc; then
  train="$build/examples/lowbit-train"
  if compgen -G "$build/dist/liblowbit_dist.*" > /dev/null; then
    cores=$(nproc)
    for run in 1 2 4 8 2z 4z 8z; do
      np=${run%z}
      args=(configs/kjv_gpt_adamw8bit.yaml --set device=cpu --set model.n_embd=256 --set model.n_layer=4
            --set train.batch_size=64 --set train.steps=60 --set train.eval_every=1000
            --set data.eval_limit=20 --set checkpoint.resume=never --set log.progress=none
            --set "checkpoint.dir=$out/nproc$run" --set "train.threads=$(( cores / np ))")
      [ "$np" -gt 1 ] && args+=(--nproc "$np")
      [ "$run" != "$np" ] && args+=(--set distributed.zero=true)
      "$train" "${args[@]}" > "$out/nproc$run.txt" 2>&1
      rc=$?
      zero=; [ "$run" != "$np" ] && zero=", ZeRO-1"
      note "lowbit-train, $np process(es) x $(( cores / np )) threads$zero: rc $rc: $(grep -m1 'ms/step' "$out/nproc$run.txt")"
      grep -m1 'done at step' "$out/nproc$run.txt"
    done
  else
    note "lowbit-train: built without --nproc (no Gloo headers)"
  fi
fi

if want ab; then
  [ -d "${LOWBIT_AB_KERNELS:-}" ] || { echo "ab: LOWBIT_AB_KERNELS must name a kernels/ folder"; exit 1; }
  nvidia=$(nvidia_opencl)
  for pass in $(seq "${LOWBIT_AB_PASSES:-2}"); do
    for side in other this; do
      if [ "$side" = other ]; then
        export LOWBIT_OPENCL_SOURCE_DIR=$LOWBIT_AB_KERNELS
      else
        unset LOWBIT_OPENCL_SOURCE_DIR
      fi
      LOWBIT_BENCH_SIZES=256M "$build/bench/bench_optim" \
        --benchmark_filter="${LOWBIT_AB_OPTIM:-^(copy|lowbit8|gradient_stats)/adamw/256M/opencl_resident}" \
        > "$out/ab_optim_${side}_$pass.txt" 2>&1
      LOWBIT_BENCH_N=$((256 << 20)) "$build/bench/bench_quantize" --benchmark_filter="/${nvidia:-none}/" \
        > "$out/ab_quantize_${side}_$pass.txt" 2>&1
      "$build/bench/bench_cuda" \
        --benchmark_filter="${LOWBIT_AB_GEMM:-^(opencl_nf4/linear/.*/m64/bf16/|opencl_fma/)}" \
        > "$out/ab_gemm_${side}_$pass.txt" 2>&1
      echo "== ab pass $pass, $side kernels:"
      cat "$out/ab_optim_${side}_$pass.txt" "$out/ab_quantize_${side}_$pass.txt" \
        "$out/ab_gemm_${side}_$pass.txt" | sed 's/\x1b\[[0-9;]*m//g' |
        grep -E '^(copy|lowbit8|gradient_stats|memcpy|quantize|dequantize|opencl)[a-z_0-9]*/' |
        awk '{print "   ", $1, $2, $3, (NF > 4 ? $NF : "")}'  # the peak's TFLOP/s is last
    done
  done
  unset LOWBIT_OPENCL_SOURCE_DIR
  note "ab: ${LOWBIT_AB_PASSES:-2} passes of $LOWBIT_AB_KERNELS against this tree (rows above, files ab_*.txt)"
fi

if want multigpu; then
  # Issue 20: data parallel + ZeRO-1 on the machine's GPUs, one rank per GPU (NCCL). A
  # Llama-shaped stack of 8 blocks of width 2048 (16 heads, SwiGLU 5632, 420M parameters),
  # trained in full with AdamW8bit on the KJV, global batch 16 windows of 512 tokens, on 1 GPU
  # and on all of them; then the QLoRA recipe on the checkpoint that run wrote; then the N-GPU
  # checkpoint resumed on 1 GPU and on the CPU for one step. With one GPU, two ranks share it
  # (Gloo through host memory): a check that the run works, not a scaling figure.
  train="$build/examples/lowbit-train"
  runs="$build/multigpu"  # checkpoints of GBs: beside the build, not in $out
  rm -rf "$runs"
  gpus=$(nvidia-smi -L | grep -c '^GPU')
  many=$gpus; [ "$gpus" -lt 2 ] && many=2
  export NCCL_NVLS_ENABLE=0
  # What the full fine-tune and QLoRA runs share: 40 steps of 16 windows of 512 tokens on the GPU.
  steps=${LOWBIT_MULTIGPU_STEPS:-40}
  common=(--set device=cuda --set model.block_size=512 --set train.batch_size=16
          --set train.steps=$steps --set schedule.warmup_steps=5 --set train.eval_every=1000
          --set data.eval_limit=8 --set checkpoint.every=$steps --set checkpoint.resume=never
          --set log.progress=none --set generate.max_new_tokens=1)
  llama=(configs/kjv_llama.yaml "${common[@]}" --set model.n_layer=8 --set model.n_embd=2048
         --set model.n_head=16 --set model.n_kv_head=16 --set model.intermediate_size=5632)
  for run in 1 "$many" "${many}z"; do
    np=${run%z}
    args=("${llama[@]}" --set "checkpoint.dir=$runs/llama$run")
    [ "$np" -gt 1 ] && args+=(--nproc "$np")
    [ "$run" != "$np" ] && args+=(--set distributed.zero=true)
    "$train" "${args[@]}" > "$out/llama$run.txt" 2>&1
    note "llama 8x2048 AdamW8bit, $run rank(s): rc $?: $(grep -m1 'processes:' "$out/llama$run.txt")"
    grep -A1 -m1 'done at step' "$out/llama$run.txt"
  done
  for target in "gpu:--set device=cuda" "cpu:--set device=cpu"; do
    rm -rf "$runs/resume" && cp -r "$runs/llama${many}z" "$runs/resume"
    "$train" "${llama[@]}" --set "checkpoint.dir=$runs/resume" --set checkpoint.resume=auto \
      --set train.steps=$((steps + 1)) ${target#*:} > "$out/resume_${target%%:*}.txt" 2>&1
    note "the ${many}-rank ZeRO-1 checkpoint resumed on the ${target%%:*} for one step: rc $?"
    grep -m1 'resumed from' "$out/resume_${target%%:*}.txt"
  done
  qlora=(configs/llama_qlora.yaml "${common[@]}" --set "model.path=$runs/llama1/hf"
         --set quant.compute_dtype=bf16)
  for np in 1 "$many"; do
    args=("${qlora[@]}" --set "checkpoint.dir=$runs/qlora$np")
    [ "$np" -gt 1 ] && args+=(--nproc "$np")
    "$train" "${args[@]}" > "$out/qlora$np.txt" 2>&1
    note "QLoRA on the 8x2048 checkpoint, $np rank(s): rc $?"
    grep -A1 -m1 'done at step' "$out/qlora$np.txt"
  done
fi

printf '%s\n' "${summary[@]}"
