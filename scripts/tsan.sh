#!/usr/bin/env bash
# Builds gateway, worker and watchdog with ThreadSanitizer (build-tsan/) and runs
# the e2e basics against them. A data race aborts the racing process
# (halt_on_error), which fails its test; any report left in a log fails the run.
# Extra args go to pytest (default: tests/e2e/test_basics.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCFAAS_SANITIZE=thread >/dev/null
cmake --build build-tsan -j"$(nproc)" --target gateway queue-worker watchdog >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4"
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(tests/e2e/test_basics.py)
status=0
CFAAS_BIN_DIR="$PWD/build-tsan/bin" CFAAS_E2E_TMP="$tmp" CFAAS_E2E_KEEP=1 \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider "${args[@]}" || status=$?
if grep -rl "WARNING: ThreadSanitizer" "$tmp" >/dev/null 2>&1; then
    echo "ThreadSanitizer reports:" >&2
    grep -rh -A30 "WARNING: ThreadSanitizer" "$tmp" | head -120 >&2
    status=1
fi
exit $status
