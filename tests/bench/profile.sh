#!/usr/bin/env bash
# Instructions per request of the gateway (valgrind/callgrind), for the sync
# and the async route, 1 KiB POSTs (docs/benchmarks.md, Profiling).
#   tests/bench/profile.sh [--bin DIR] [--out DIR] [--size BYTES] [--seconds S]
# Prints, per route, total instructions / requests served, then the share of
# each object (libevent, libc, nats.c, the gateway itself) and the top functions.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN_DIR=$ROOT/build/bin
OUT=""
SIZE=1024
SECS=8
while [ $# -gt 0 ]; do
    case "$1" in
    --bin) BIN_DIR=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    *) sed -n '2,7p' "$0"; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
TMP=$(mktemp -d)
[ -n "$OUT" ] || OUT=$TMP/out
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
read -r NP EP GP <<<"$(/usr/bin/python3 -c '
import socket
ss=[socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1",0))
print(*[s.getsockname()[1] for s in ss])')"
nats-server -js -a 127.0.0.1 -p "$NP" -sd "$TMP/js" >"$OUT/nats.log" 2>&1 & pids+=($!)
"$BIN_DIR/bench_echo_upstream" "$EP" >"$OUT/upstream.log" 2>&1 & pids+=($!)
printf '{"functions":[{"name":"echo","namespace":"openfaas-fn","url":"http://127.0.0.1:%s"}]}\n' "$EP" >"$TMP/f.json"
cd "$OUT"
port=$GP nats_url=nats://127.0.0.1:$NP functions_file=$TMP/f.json log_level=warn \
    valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" "$BIN_DIR/gateway" >"$OUT/gateway.log" 2>&1 &
gpid=$!
pids+=($gpid)
for _ in $(seq 1 600); do
    curl -fs -o /dev/null "http://127.0.0.1:$GP/readyz" && break
    sleep 0.1
done
for route in function async-function; do
    curl -fs -o /dev/null -d warm "http://127.0.0.1:$GP/$route/echo" || true
    callgrind_control -z "$gpid" >/dev/null
    n=$(BENCH_BODY_BYTES=$SIZE wrk -t1 -c10 -d"${SECS}s" -s "$ROOT/tests/bench/post.lua" \
        "http://127.0.0.1:$GP/$route/echo" | awk '/requests in/ {print $1}')
    callgrind_control -d "$gpid" >/dev/null
    sleep 1
    f=$(ls -t "$OUT"/cg.$gpid.* | head -1)
    mv "$f" "$OUT/cg.$route"
    echo "== /$route/echo, ${SIZE}-byte POST, $n requests"
    /usr/bin/python3 "$ROOT/tests/bench/cg_self.py" "$OUT/cg.$route" --requests "$n" --top 25
done
