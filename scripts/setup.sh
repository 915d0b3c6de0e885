#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing.
# Used by the README's two commands, by .ci/run and by deploy/docker/Dockerfile.
#   scripts/setup.sh          what building and running needs
#   scripts/setup.sh --test   also what the test command needs: clang and its
#                             sanitizer/libFuzzer runtime, and nginx + haproxy
#                             (reference proxies of tests/bench/run.sh),
#                             prometheus (promtool, the alert test) and
#                             chromium (the portal's browser test)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libnats-dev nats-server libevent-dev libhttp-parser-dev
      libcurl4-openssl-dev libssl-dev libjansson-dev uuid-dev figlet curl clang-format
      python3-pytest python3-requests wrk)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(clang libclang-rt-14-dev nginx haproxy openssl prometheus chromium)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # nginx and haproxy are only run by the benchmark, on their own ports: keep
  # the packages from starting system services on install.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The portal's browser test drives Debian's Chromium with playwright-core
# (npm, pinned by tests/browser/package-lock.json; no browser download).
if [ "${1:-}" = "--test" ]; then
  if ! command -v npm >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  browser="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
  if [ ! -f "$browser/node_modules/playwright-core/package.json" ]; then
    echo "setup: npm ci in tests/browser (playwright-core)"
    (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
  fi
fi
