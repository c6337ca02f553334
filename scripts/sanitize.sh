#!/usr/bin/env bash
# The torch-free kernel tests (CPU, and OpenCL on PoCL), the tokenizers'
# tests and the parsers' tests (the fuzz findings' regression tests among
# them) under
# AddressSanitizer and UndefinedBehaviorSanitizer, then every committed fuzz
# input replayed through its target. Builds in build-fuzz/ with clang, the
# tree scripts/fuzz.sh uses (LOWBIT_FUZZ=ON implies
# LOWBIT_SANITIZE=address,undefined). Any sanitizer report fails the run.
# LOWBIT_SANITIZE_ALL=1 (not in CI: about 25 more minutes of build on 2
# cores): also the whole torch-level suite, lowbit_tests, lowbit_example_tests
# (running the sanitized lowbit-train), lowbit_dist_tests and
# lowbit_nproc_tests where Gloo is built, less the tests that load a
# SentencePiece model (load_module.cpp says why they cannot).
set -euo pipefail
cd "$(dirname "$0")/.."
cxx="${CXX:-clang++}"
command -v "$cxx" >/dev/null || { echo "sanitize: $cxx not found (apt-get install clang)" >&2; exit 2; }

cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release \
  "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -gline-tables-only -DNDEBUG" -DCMAKE_CXX_COMPILER="$cxx" \
  -DLOWBIT_FUZZ=ON -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_BUILD_BENCH=OFF -DLOWBIT_CUDA=OFF >/dev/null
targets=(lowbit_kernel_tests lowbit_fuzz_regression_tests lowbit_fuzz)
# grep reads all of the list (with -q, pipefail would see cmake's SIGPIPE).
has_target() { cmake --build build-fuzz --target help | grep -w "$1" >/dev/null; }
if has_target lowbit_text_tests; then targets+=(lowbit_text_tests); fi
suites=()  # LOWBIT_SANITIZE_ALL's torch-level test programs
if [ "${LOWBIT_SANITIZE_ALL:-0}" = 1 ]; then
  suites=(lowbit_tests lowbit_example_tests)
  for t in lowbit_dist_tests lowbit_nproc_tests; do
    if has_target $t; then suites+=($t); fi
  done
fi
targets+=("${suites[@]}")
cmake --build build-fuzz --target "${targets[@]}" -j"$(nproc)"

# PoCL and the ICD loader are not instrumented and keep allocations until
# exit; leaks are checked by the fuzz targets, which run lowbit's parsers only.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export LOWBIT_REQUIRE_OPENCL="${LOWBIT_REQUIRE_OPENCL:-1}"
build-fuzz/tests/lowbit_kernel_tests
build-fuzz/tests/fuzz/lowbit_fuzz_regression_tests
# SentencePiece's module is loaded with RTLD_DEEPBIND, which the sanitizer
# runtime refuses (google/sanitizers#611): those tests run in the normal suite.
[ ! -x build-fuzz/tests/lowbit_text_tests ] ||
  build-fuzz/tests/lowbit_text_tests --gtest_filter='-SentencePieceModel.*:TrainedSentencePieceModelCheck.*'
for t in "${suites[@]}"; do
  filter='*'
  [ "$t" != lowbit_example_tests ] || filter='-HfRun.*:Trainer.TwentyStepsOfEveryRecipe'
  "build-fuzz/tests/$t" --gtest_filter="$filter"
done
for dir in tests/fuzz/corpus/*/; do
  t=$(basename "$dir")
  echo "sanitize: replaying $(ls "$dir" | wc -l) inputs through $t"
  "build-fuzz/tests/fuzz/$t" -runs=0 "$dir" >"build-fuzz/replay-$t.log" 2>&1 ||
    { cat "build-fuzz/replay-$t.log"; exit 1; }
done
echo "sanitize: clean"
