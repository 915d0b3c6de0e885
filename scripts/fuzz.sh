#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each one.
#   scripts/fuzz.sh                 every target for 10 s (what the test command runs):
#                                   inputs found go to a scratch directory, the repo's
#                                   corpus is only read
#   scripts/fuzz.sh --time 600 --keep   longer, and new inputs are merged into
#                                   tests/fuzz/corpus/<target> (commit them)
#   scripts/fuzz.sh --only codec    one target
# A crash stops the run with the reproducer path (crash-*) in build-fuzz/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=10
keep=0
only=""
while [ $# -gt 0 ]; do
    case "$1" in
    --time) secs="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --only) only="$2"; shift 2 ;;
    *) echo "usage: $0 [--time SECONDS] [--keep] [--only TARGET]" >&2; exit 2 ;;
    esac
done
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCFAAS_FUZZ=ON \
    -DCFAAS_SANITIZE=fuzzer-no-link,address,undefined >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_all >/dev/null
targets=$(sed -n 's/^set(CFAAS_FUZZ_TARGETS \(.*\))$/\1/p' tests/fuzz/CMakeLists.txt)
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for t in $targets; do
    [ -n "$only" ] && [ "$t" != "$only" ] && continue
    corpus="tests/fuzz/corpus/$t"
    mkdir -p "$corpus"
    scratch=$(mktemp -d)
    echo "== fuzz_$t for ${secs}s (corpus $(ls "$corpus" | wc -l) inputs)"
    (cd build-fuzz/fuzz && ./fuzz_$t -max_total_time="$secs" -max_len=8192 -print_final_stats=0 \
        "$scratch" "../../$corpus" 2>&1 | tail -n 2)
    if [ "$keep" = 1 ]; then
        (cd build-fuzz/fuzz && ./fuzz_$t -merge=1 "../../$corpus" "$scratch" >/dev/null 2>&1)
    fi
    rm -rf "$scratch"
done
