#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing.
# Used by the README's two commands, by .ci/run and by deploy/docker/Dockerfile.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libnats-dev nats-server libevent-dev
      libcurl4-openssl-dev libjansson-dev uuid-dev figlet curl clang-format
      python3-pytest python3-requests wrk)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
