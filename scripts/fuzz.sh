#!/usr/bin/env bash
# Fuzzes every parser: builds the libFuzzer targets of tests/fuzz (clang,
# ASan + UBSan) into build-fuzz/ and runs each for SECONDS (default 60) from
# its seed corpus, printing the executions done and whether it found
# anything. A finding (sanitizer report, abort, leak, a run over the memory
# limit or a 10 s input) leaves its input in build-fuzz/findings/ and makes
# the script exit 1. New inputs that grew coverage go to build-fuzz/corpus/,
# never into the committed corpus.
# Targets run FUZZ_JOBS at a time (default: one per core).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
cxx="${CXX:-clang++}"
command -v "$cxx" >/dev/null || { echo "fuzz: $cxx not found (apt-get install clang)" >&2; exit 2; }

if [ ! -f build-fuzz/CMakeCache.txt ]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release \
    "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -gline-tables-only -DNDEBUG" -DCMAKE_CXX_COMPILER="$cxx" \
    -DLOWBIT_FUZZ=ON -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_BUILD_BENCH=OFF -DLOWBIT_CUDA=OFF
fi
cmake --build build-fuzz --target lowbit_fuzz -j"$(nproc)"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for dir in tests/fuzz/corpus/*/; do
    t=$(basename "$dir")
    [ -x "build-fuzz/tests/fuzz/$t" ] && targets+=("$t")
  done
fi

# Leaks are findings too (what libtorch allocates once stays reachable, so
# LeakSanitizer does not report it).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
# ... except libtorch's own (tests/fuzz/lsan.supp says which and why).
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
export OMP_NUM_THREADS=1
# The targets write each input to a scratch file: on tmpfs, so a disk busy
# with other work cannot stall a close() past the 10 s timeout (it did once).
# libFuzzer ends with _Exit, so the scratch files go with this directory.
scratch_root=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && scratch_root=/dev/shm
TMPDIR=$(mktemp -d "$scratch_root/lowbit-fuzz.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
mkdir -p build-fuzz/findings build-fuzz/logs
# One target per core at a time (FUZZ_JOBS): each libFuzzer process is one thread.
# (nproc honours OMP_NUM_THREADS, exported as 1 above: ask without it.)
jobs="${FUZZ_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}"
fuzz_one() {
  local t=$1 status=0
  mkdir -p "build-fuzz/corpus/$t"
  "build-fuzz/tests/fuzz/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="build-fuzz/findings/$t-" \
    "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"build-fuzz/logs/$t.log" 2>&1 || status=$?
  echo "$status" >"build-fuzz/logs/$t.status"
}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  fuzz_one "$t" &
done
wait
failed=0
printf '%-22s %12s  %s\n' target executions result
for t in "${targets[@]}"; do
  log="build-fuzz/logs/$t.log"
  status=$(cat "build-fuzz/logs/$t.status")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    result="no finding"
  else
    result="FINDING (exit $status): $(grep -m1 -E 'ERROR: |runtime error|==ERROR|fuzz: ' "$log" || tail -1 "$log") -- see $log"
    failed=1
  fi
  printf '%-22s %12s  %s\n' "$t" "${runs:-?}" "$result"
done
exit "$failed"
