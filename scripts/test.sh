#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: style check, unit tests
# (also under AddressSanitizer + UBSan), end to end (pytest against a real
# nats-server -js and the real binaries), libFuzzer targets for a short fixed
# time, the e2e basics against ThreadSanitizer builds, deployment checks, and a
# short smoke of the benchmark harness; the Prometheus rules under promtool, the
# portal in headless Chromium and the alerts in a real Prometheus (in the e2e
# run). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
./scripts/build.sh

echo "== style: clang-format"
clang-format --dry-run --Werror $(git ls-files '*.c' '*.h')

echo "== Prometheus rules: promtool check and unit tests (deploy/prometheus)"
promtool check rules deploy/prometheus/cfaas.rules.yml
promtool test rules tests/prometheus/cfaas.rules.test.yml

echo "== unit tests"
(cd build && ctest -L unit --output-on-failure)

echo "== unit tests under address,undefined sanitizers"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCFAAS_SANITIZE=address,undefined >/dev/null
cmake --build build-asan -j"$(nproc)" >/dev/null
(cd build-asan && UBSAN_OPTIONS=halt_on_error=1 ctest -L unit --output-on-failure)

echo "== fuzzing: every libFuzzer target for 10 s (tests/fuzz)"
./scripts/fuzz.sh --time 10

echo "== end-to-end basics against ThreadSanitizer builds"
./scripts/tsan.sh tests/e2e/test_basics.py tests/e2e/test_http_layer.py -k "not 2gb"

echo "== end-to-end and deployment tests"
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e tests/deploy "$@"

echo "== benchmark harness smoke"
tests/bench/run.sh --smoke
