#!/usr/bin/env bash
# The portability guard of the CPU kernels' instruction-set paths
# (kernels/cpu/isa_region.h): in the objects of a path, every function that
# holds VEX / EVEX instructions (AVX and later: mnemonics v*, k* mask moves)
# lives in that path's namespace. Anything else (an inline function or
# template instantiation shared with baseline code) could be the copy the
# linker keeps for every caller and crash a CPU without AVX.
# Usage: isa_objects_check.sh <path namespace: generic|avx2|avx512> <objects...>
# (an argument may hold several objects separated by ';', as CMake's
# $<TARGET_OBJECTS> gives them to add_test).
set -euo pipefail
ns=$1
shift
objects=()
for arg in "$@"; do
  IFS=';' read -ra part <<< "$arg"
  objects+=("${part[@]}")
done
status=0
for obj in "${objects[@]}"; do
  bad=$(objdump -d --no-show-raw-insn -C "$obj" | awk -v ns="$ns" '
    /^[0-9a-f]+ <.*>:$/ { name = $0; allowed = (ns != "generic") && index(name, ns "::") > 0; next }
    !allowed && $2 ~ /^(v[a-z]|k(mov|and|or|not|shift|test|unpck))/ { print name; allowed = 1 }')
  if [ -n "$bad" ]; then
    echo "$obj: AVX instructions outside the $ns path's namespace:"
    echo "$bad"
    status=1
  fi
done
[ "$status" = 0 ] && echo "${#objects[@]} objects of the $ns path: AVX code only inside its namespace"
exit $status
