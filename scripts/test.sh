#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: unit (ctest), end to
# end (pytest, real nats-server and binaries), deployment checks, and a
# 10-second smoke of the benchmark harness. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
(cd build && ctest -L unit --output-on-failure)
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e tests/deploy "$@"
if [ -x tests/bench/run.sh ]; then
  tests/bench/run.sh --smoke
fi
