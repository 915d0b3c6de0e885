#!/usr/bin/env bash
# Regenerates docs/configuration.md from the programs' own config tables
# (each binary prints its table with --help-markdown). Run after ./scripts/build.sh.
# tests/deploy checks that the committed file matches.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/configuration.md}
{
  echo "# Configuration"
  echo
  echo "Every program is configured only through environment variables. This file is generated"
  echo "by \`scripts/gen-config-doc.sh\` from the same declarative tables that parse and validate"
  echo "the variables, so it cannot drift. A bad value makes the program exit with status 2 and a"
  echo "message naming the variable. Durations accept plain seconds (\`60\`) or Go style"
  echo "(\`1m05s\`, \`500ms\`), as OpenFaaS does. Each program logs its effective configuration"
  echo "(secrets redacted) when it starts, and prints this table with \`--help\`."
  for p in gateway queue-worker watchdog provider; do
    echo
    echo "## $p"
    echo
    build/bin/$p --help-markdown
  done
} >"$out"
