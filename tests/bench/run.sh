#!/usr/bin/env bash
# cfaas benchmark harness (docs/benchmarks.md).
#
#   tests/bench/run.sh [--smoke] [--limits-only] [--out DIR] [--bin DIR]
#
# Starts real processes on loopback (nats-server -js with a temp file store,
# bench_echo_upstream, gateway, queue-worker), measures each figure next to its
# limit, and writes results.md + results.csv + raw tool output into the output
# dir (default tests/bench/out/<timestamp>/). Targets are reported, not
# enforced. --smoke: ~20 s, asserts only that every figure is > 0 and the files
# exist (for CI). --limits-only: only the machine limits (direct upstream, raw
# nats.c publish); needs neither gateway nor queue-worker.
#
# Tunables (environment): DURATION (s per wrk run), WARMUP (s), CONNECTIONS,
# WRK_THREADS, SIZES ("13 1024 65536"), PUB_COUNT, PUB_BYTES (cap on count*size),
# SYNC_PUB_COUNT, JS_MAX_PENDING, DRAIN_COUNT, DRAIN_SIZE, WORKER_MAX_INFLIGHT,
# DRAIN_TIMEOUT, DRAIN_STALL (s), LOG_LEVEL, MAX_BODY_BYTES, KEEP_TMP=1,
# STAGES (default "sync async drain scaling records"; a subset measures only
# those: "drain scaling" = 1 and 2 workers, "drain records" = call records on/off,
# e.g. STAGES="drain records" while tuning the worker).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR="$ROOT/tests/bench"
BIN_DIR=${BIN_DIR:-$ROOT/build/bin}
MODE=full
LIMITS_ONLY=0
OUT_DIR=""

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
    --smoke) MODE=smoke ;;
    --limits-only) LIMITS_ONLY=1 ;;
    --out) OUT_DIR=${2:?--out needs a directory}; shift ;;
    --bin) BIN_DIR=${2:?--bin needs a directory}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [ "$MODE" = smoke ]; then
    DURATION=${DURATION:-1}
    WARMUP=${WARMUP:-0}
    SIZES=${SIZES:-1024}
    PUB_COUNT=${PUB_COUNT:-2000}
    SYNC_PUB_COUNT=${SYNC_PUB_COUNT:-200}
    DRAIN_COUNT=${DRAIN_COUNT:-200}
    DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-30}
    DRAIN_STALL=${DRAIN_STALL:-5}
else
    DURATION=${DURATION:-10}
    WARMUP=${WARMUP:-2}
    SIZES=${SIZES:-13 1024 65536}
    PUB_COUNT=${PUB_COUNT:-300000}
    SYNC_PUB_COUNT=${SYNC_PUB_COUNT:-20000}
    DRAIN_COUNT=${DRAIN_COUNT:-50000}
fi
CONNECTIONS=${CONNECTIONS:-50}
WRK_THREADS=${WRK_THREADS:-2}
PUB_BYTES=${PUB_BYTES:-2147483648} # cap count*size of one raw publish run (disk)
JS_MAX_PENDING=${JS_MAX_PENDING:-256}
DRAIN_SIZE=${DRAIN_SIZE:-1024}
WORKER_MAX_INFLIGHT=${WORKER_MAX_INFLIGHT:-50}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120} # s for one drain
DRAIN_STALL=${DRAIN_STALL:-15}      # s without progress before a drain is abandoned
LOG_LEVEL=${LOG_LEVEL:-warn}
MAX_BODY_BYTES=${MAX_BODY_BYTES:-1000000}
STAGES=${STAGES:-sync async drain scaling records}
stage_on() { [[ " $STAGES " == *" $1 "* ]]; }
STREAM=faas-request
PY=${PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3
RAW_STREAM=bench-raw

[ -n "$OUT_DIR" ] || OUT_DIR="$BENCH_DIR/out/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT_DIR/raw" "$OUT_DIR/logs"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
CSV="$OUT_DIR/results.csv"
META="$OUT_DIR/meta.txt"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
need_bin() { [ -x "$BIN_DIR/$1" ] || die "$BIN_DIR/$1 not found: build first (cmake -S . -B build && cmake --build build -j)"; }
need_bin bench_echo_upstream
need_bin bench_js_publish
if [ "$LIMITS_ONLY" = 0 ]; then
    need_bin gateway
    need_bin queue-worker
fi
for t in wrk nats-server curl "$PY"; do
    command -v "$t" >/dev/null || die "$t is not installed"
done

# ---------------------------------------------------------------- processes
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cfaas-bench.XXXXXX")
declare -A PIDS=()    # name -> pid
declare -a ORDER=()   # start order, stopped in reverse

stop_proc() { # name
    local name=$1 pid=${PIDS[$1]:-} i
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) ignored SIGTERM for 5 s, killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    unset "PIDS[$name]"
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
        stop_proc "${ORDER[$i]}"
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        log "kept temp dir $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_proc() { # name cmd... (env assignments go through `env`)
    local name=$1
    shift
    "$@" >"$OUT_DIR/logs/$name.log" 2>&1 &
    PIDS[$name]=$!
    ORDER+=("$name")
}

alive() { # name
    local pid=${PIDS[$1]:-}
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

wait_http() { # name url [timeout_s]  - wait for a 2xx
    local name=$1 url=$2 timeout=${3:-15} i
    for i in $(seq 1 $((timeout * 20))); do
        if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
            return 0
        fi
        alive "$name" || die "$name exited during start-up; see $OUT_DIR/logs/$name.log"
        sleep 0.05
    done
    die "$name not ready at $url after ${timeout}s; see $OUT_DIR/logs/$name.log"
}

vmhwm_kb() { # name -> peak RSS in kB (0 if unknown)
    local pid=${PIDS[$1]:-}
    [ -n "$pid" ] && awk '/^VmHWM:/ {print $2; found=1} END {if (!found) print 0}' "/proc/$pid/status" 2>/dev/null || echo 0
}

cpu_ticks() { # name -> user+system CPU time of the process so far, in clock ticks
    local pid=${PIDS[$1]:-}
    # fields after the ")" that ends the command name: utime is the 12th, stime the 13th
    [ -n "$pid" ] && awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$pid/stat" 2>/dev/null || echo 0
}

cpu_split() { # name -> "user system voluntary involuntary" summed over the process's threads
    local pid=${PIDS[$1]:-}
    [ -n "$pid" ] || { echo "0 0 0 0"; return; }
    cat /proc/"$pid"/task/*/stat /proc/"$pid"/task/*/status 2>/dev/null | awk '
        /^voluntary_ctxt_switches:/ {v += $2; next}
        /^nonvoluntary_ctxt_switches:/ {nv += $2; next}
        /^[0-9]+ \(/ {sub(/^.*\) /, ""); u += $12; s += $13}
        END {print u + 0, s + 0, v + 0, nv + 0}'
}

free_ports() { # n -> n distinct free loopback ports, one per line
    "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
EOF
}

# ---------------------------------------------------------------- measurement helpers
printf 'stage,case,body_bytes,connections,value,unit,p50_ms,p99_ms,limit,ratio,target,met,errors,raw\n' >"$CSV"

# row stage case body conns value unit p50 p99 limit ratio target met errors raw
row() {
    local f out="" sep=""
    for f in "$@"; do
        if [[ $f == *[,\"]* ]]; then
            f="\"${f//\"/\"\"}\""
        fi
        out+="$sep$f"
        sep=,
    done
    printf '%s\n' "$out" >>"$CSV"
}

fmt() { "$PY" -c 'import sys; v=float(sys.argv[1]); print(("%.3f" % v) if abs(v) < 100 else ("%.0f" % v))' "$1"; }
ratio() { "$PY" -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print("%.2f" % (a/b) if b > 0 else "")' "$1" "$2"; }
meets() { "$PY" -c "import sys; a=float(sys.argv[1]); b=float(sys.argv[2]); sys.exit(0 if a $2 b else 1)" "$1" "$3" && echo yes || echo no; }

# run_wrk tag url body_bytes -> sets W_RPS W_P50 W_P99 W_ERR W_RAW
run_wrk() {
    local tag=$1 url=$2 size=$3 raw="$OUT_DIR/raw/wrk_$1_$3.txt"
    if [ "$WARMUP" != 0 ]; then
        BENCH_BODY_BYTES=$size wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" \
            -s "$BENCH_DIR/post.lua" "$url" >/dev/null 2>&1 || true
    fi
    BENCH_BODY_BYTES=$size wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s "$BENCH_DIR/post.lua" "$url" >"$raw" 2>&1 || log "wrk exited non-zero for $tag (see $raw)"
    read -r W_RPS W_P50 W_P99 W_ERR < <("$PY" - "$raw" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
p = {k: ms(v, u) for k, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}
err = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", text))
se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if se:
    err += sum(int(x) for x in se.groups())
print(rps.group(1) if rps else 0, "%.3f" % p.get("50", 0), "%.3f" % p.get("99", 0), err)
EOF
)
    W_RAW="raw/$(basename "$raw")"
    log "  $tag ${size}B: $(fmt "$W_RPS") req/s p50 ${W_P50} ms p99 ${W_P99} ms errors $W_ERR"
}

# run_pub tag args... -> sets P_RATE P_P50 P_P99 P_ERR P_RAW (stream/url given by caller)
run_pub() {
    local tag=$1 raw="$OUT_DIR/raw/pub_$1.txt"
    shift
    "$BIN_DIR/bench_js_publish" --url "$NATS_URL" "$@" >"$raw" 2>&1 || log "bench_js_publish failed for $tag (see $raw)"
    read -r P_RATE P_P50 P_P99 P_ERR < <("$PY" - "$raw" <<'EOF'
import sys
kv = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        kv = dict(f.split("=", 1) for f in line.split()[1:])
print(kv.get("msgs_per_s", 0), kv.get("p50_ms", 0), kv.get("p99_ms", 0),
      int(kv.get("errors", 1)) + int(kv.get("count", 0)) - int(kv.get("ok", 0)) if kv else 1)
EOF
)
    P_RAW="raw/$(basename "$raw")"
    log "  $tag: $(fmt "$P_RATE") msgs/s p50 ${P_P50} ms p99 ${P_P99} ms errors $P_ERR"
}

purge() { # stream
    "$BIN_DIR/bench_js_publish" --url "$NATS_URL" --stream "$1" --count 0 --purge --quiet \
        >>"$OUT_DIR/logs/purge.log" 2>&1 || die "purge of $1 failed (see logs/purge.log)"
}

# jsz stream -> "messages ack_pending redelivered" of the stream and its consumers
jsz() {
    curl -fsS --max-time 2 "http://127.0.0.1:$NATS_MON/jsz?streams=true&consumers=true" 2>/dev/null |
        "$PY" -c '
import json, sys
name = sys.argv[1]
try:
    d = json.load(sys.stdin)
except Exception:
    print("-1 -1 -1"); sys.exit()
for a in d.get("account_details", []):
    for s in a.get("stream_detail", []) or []:
        if s.get("name") == name:
            cs = s.get("consumer_detail", []) or []
            print(s["state"]["messages"], sum(c.get("num_ack_pending", 0) for c in cs),
                  sum(c.get("num_redelivered", 0) for c in cs))
            sys.exit()
print("0 0 0")' "$1"
}

upstream_count() { # -> "count first_ns last_ns" ("0 0 0" when unreachable)
    # Parsed in bash: this runs in the drain's poll loop, and a python start-up
    # per poll took ~0.4 core away from the processes being measured.
    local body
    body=$(curl -fsS --max-time 2 "http://127.0.0.1:$ECHO_PORT/count" 2>/dev/null) || body=""
    if [[ $body =~ \"count\":([0-9]+),\"first_ns\":([0-9]+),\"last_ns\":([0-9]+) ]]; then
        echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]} ${BASH_REMATCH[3]}"
    else
        echo "0 0 0"
    fi
}

# ---------------------------------------------------------------- start the fixed processes
read -r NATS_PORT NATS_MON ECHO_PORT GW_PORT GW_METRICS W1_METRICS W2_METRICS NGINX_PORT HAPROXY_PORT GW2_PORT <<<"$(free_ports 10 | tr '\n' ' ')"
NATS_URL="nats://127.0.0.1:$NATS_PORT"
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "mode=$MODE"
    echo "host=$(uname -srm)"
    echo "cpus=$(nproc)"
    echo "cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "nats_server=$(nats-server --version 2>&1 | head -1)"
    echo "wrk=$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "duration_s=$DURATION connections=$CONNECTIONS wrk_threads=$WRK_THREADS sizes=$SIZES"
    echo "js_max_pending=$JS_MAX_PENDING pub_count=$PUB_COUNT drain_count=$DRAIN_COUNT drain_size=$DRAIN_SIZE worker_max_inflight=$WORKER_MAX_INFLIGHT"
} >"$META"

log "output: $OUT_DIR"
log "starting nats-server (client $NATS_PORT, monitor $NATS_MON, store $TMP/js)"
start_proc nats-server nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -sd "$TMP/js"
wait_http nats-server "http://127.0.0.1:$NATS_MON/healthz"

log "starting bench_echo_upstream on $ECHO_PORT"
start_proc upstream "$BIN_DIR/bench_echo_upstream" "$ECHO_PORT"
wait_http upstream "http://127.0.0.1:$ECHO_PORT/count"

FUNCS="$TMP/functions.json"
printf '{"functions":[{"name":"echo","namespace":"openfaas-fn","url":"http://127.0.0.1:%s","annotations":{},"labels":{}}]}\n' \
    "$ECHO_PORT" >"$FUNCS"
cp "$FUNCS" "$OUT_DIR/logs/functions.json"

if [ "$LIMITS_ONLY" = 0 ]; then
    log "starting gateway on $GW_PORT (metrics $GW_METRICS)"
    start_proc gateway env port="$GW_PORT" metrics_port="$GW_METRICS" nats_url="$NATS_URL" \
        faas_nats_channel="$STREAM" functions_file="$FUNCS" max_body_bytes="$MAX_BODY_BYTES" \
        log_level="$LOG_LEVEL" "$BIN_DIR/gateway"
    wait_http gateway "http://127.0.0.1:$GW_PORT/healthz"
    wait_http gateway "http://127.0.0.1:$GW_PORT/readyz"
    # One call each way proves the routes before loading them.
    curl -fsS -o /dev/null --max-time 5 -d ping "http://127.0.0.1:$GW_PORT/function/echo" ||
        die "gateway sync proxy to echo failed; see logs/gateway.log"
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -d ping "http://127.0.0.1:$GW_PORT/async-function/echo")
    [ "$code" = 202 ] || die "gateway async submit answered $code, expected 202; see logs/gateway.log"
fi

# ---------------------------------------------------------------- reference proxies
# Debian's nginx (one worker process, upstream keep-alive) and haproxy (one
# thread) in front of the same upstream: the figures ours are measured against.
HAVE_NGINX=0
HAVE_HAPROXY=0
if [ "$LIMITS_ONLY" = 0 ] && command -v nginx >/dev/null; then
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 128k;
    upstream echo { server 127.0.0.1:$ECHO_PORT; keepalive 256; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    log "starting nginx (1 worker) on $NGINX_PORT"
    start_proc nginx nginx -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
    wait_http nginx "http://127.0.0.1:$NGINX_PORT/count"
    HAVE_NGINX=1
fi
if [ "$LIMITS_ONLY" = 0 ] && command -v haproxy >/dev/null; then
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    server echo 127.0.0.1:$ECHO_PORT
EOF
    log "starting haproxy (1 thread) on $HAPROXY_PORT"
    start_proc haproxy haproxy -db -f "$TMP/haproxy.cfg"
    wait_http haproxy "http://127.0.0.1:$HAPROXY_PORT/count"
    HAVE_HAPROXY=1
fi
[ "$MODE" = smoke ] || [ "$LIMITS_ONLY" = 1 ] || [ "$HAVE_NGINX$HAVE_HAPROXY" = 11 ] ||
    die "nginx and haproxy are the reference proxies: install them (scripts/setup.sh --test)"

declare -A BEST_PROXY=() SYNC_P99=()

# ---------------------------------------------------------------- stage 1: sync proxy
stage_on sync && log "stage 1: sync (wrk -c$CONNECTIONS -d${DURATION}s POST)"
for size in $(stage_on sync && echo "$SIZES"); do
    run_wrk direct "http://127.0.0.1:$ECHO_PORT/" "$size"
    d_rps=$W_RPS
    row sync "direct upstream" "$size" "$CONNECTIONS" "$W_RPS" req/s "$W_P50" "$W_P99" "" "" "" "" "$W_ERR" "$W_RAW"
    best=0
    if [ "$HAVE_NGINX" = 1 ]; then
        run_wrk nginx "http://127.0.0.1:$NGINX_PORT/" "$size"
        row sync "nginx reverse proxy (1 worker, keep-alive)" "$size" "$CONNECTIONS" "$W_RPS" req/s "$W_P50" "$W_P99" \
            "$d_rps" "$(ratio "$W_RPS" "$d_rps")" "" "" "$W_ERR" "$W_RAW"
        best=$("$PY" -c "print(max($best, $W_RPS))")
    fi
    if [ "$HAVE_HAPROXY" = 1 ]; then
        run_wrk haproxy "http://127.0.0.1:$HAPROXY_PORT/" "$size"
        row sync "haproxy (1 thread, keep-alive)" "$size" "$CONNECTIONS" "$W_RPS" req/s "$W_P50" "$W_P99" \
            "$d_rps" "$(ratio "$W_RPS" "$d_rps")" "" "" "$W_ERR" "$W_RAW"
        best=$("$PY" -c "print(max($best, $W_RPS))")
    fi
    [ "$best" != 0 ] || best=$d_rps # smoke run without the reference proxies
    BEST_PROXY[$size]=$best
    if [ "$LIMITS_ONLY" = 0 ]; then
        run_wrk gateway_sync "http://127.0.0.1:$GW_PORT/function/echo" "$size"
        SYNC_P99[$size]=$W_P99
        r=$(ratio "$W_RPS" "$best")
        row sync "gateway /function/echo (vs the better proxy)" "$size" "$CONNECTIONS" "$W_RPS" req/s "$W_P50" "$W_P99" \
            "$best" "$r" "ratio>=1.0" "$(meets "${r:-0}" '>=' 1.0)" "$W_ERR" "$W_RAW"
    fi
done
if [ "$LIMITS_ONLY" = 0 ] && stage_on sync; then
    kb=$(vmhwm_kb gateway)
    mb=$("$PY" -c "print('%.2f' % ($kb / 1024))")
    nmb=""
    if [ "$HAVE_NGINX" = 1 ]; then
        nmb=$("$PY" -c "print('%.2f' % ($(vmhwm_kb nginx) / 1024))")
        row rss "nginx peak RSS after sync load" "" "$CONNECTIONS" "$nmb" MB "" "" "" "" "" "" 0 ""
    fi
    if [ "$HAVE_HAPROXY" = 1 ]; then
        hmb=$("$PY" -c "print('%.2f' % ($(vmhwm_kb haproxy) / 1024))")
        row rss "haproxy peak RSS after sync load" "" "$CONNECTIONS" "$hmb" MB "" "" "" "" "" "" 0 ""
    fi
    if [ -n "$nmb" ]; then
        row rss "gateway peak RSS after sync load" "" "$CONNECTIONS" "$mb" MB "" "" "$nmb" "$(ratio "$mb" "$nmb")" \
            "<= nginx" "$(meets "$mb" '<=' "$nmb")" 0 ""
    else
        row rss "gateway peak RSS after sync load" "" "$CONNECTIONS" "$mb" MB "" "" "" "" "<=8 MB" "$(meets "$mb" '<=' 8)" 0 ""
    fi
    log "  gateway VmHWM after sync load: $mb MB (nginx ${nmb:-n/a} MB)"
fi

# ---------------------------------------------------------------- stage 2: async accept
stage_on async && log "stage 2: async accept (durable 202, file storage, no worker) vs raw nats.c publish"
for size in $(stage_on async && echo "$SIZES"); do
    count=$("$PY" -c "print(max(100, min($PUB_COUNT, $PUB_BYTES // max(1, $size))))")
    # The limit is the better of two in-flight windows: JS_MAX_PENDING and the
    # gateway's own concurrency (CONNECTIONS); large bodies often do better
    # with the smaller window.
    run_pub "async_${size}" --stream "$RAW_STREAM" --count "$count" --size "$size" --max-pending "$JS_MAX_PENDING"
    row async "nats.c js_PublishMsgAsync (max_pending $JS_MAX_PENDING)" "$size" "$JS_MAX_PENDING" "$P_RATE" msg/s \
        "$P_P50" "$P_P99" "" "" "" "" "$P_ERR" "$P_RAW"
    l_rate=$P_RATE
    purge "$RAW_STREAM"
    run_pub "async_${size}_w${CONNECTIONS}" --stream "$RAW_STREAM" --count "$count" --size "$size" --max-pending "$CONNECTIONS"
    row async "nats.c js_PublishMsgAsync (max_pending $CONNECTIONS)" "$size" "$CONNECTIONS" "$P_RATE" msg/s \
        "$P_P50" "$P_P99" "" "" "" "" "$P_ERR" "$P_RAW"
    l_rate=$("$PY" -c "print(max($l_rate, $P_RATE))")
    purge "$RAW_STREAM"
    scount=$("$PY" -c "print(max(50, min($SYNC_PUB_COUNT, $PUB_BYTES // max(1, $size))))")
    run_pub "sync_${size}" --stream "$RAW_STREAM" --count "$scount" --size "$size" --sync
    row async "nats.c js_PublishMsg (sync, one at a time)" "$size" 1 "$P_RATE" msg/s "$P_P50" "$P_P99" \
        "$l_rate" "$(ratio "$P_RATE" "$l_rate")" "" "" "$P_ERR" "$P_RAW"
    purge "$RAW_STREAM"
    if [ "$LIMITS_ONLY" = 0 ]; then
        purge "$STREAM"
        run_wrk gateway_async "http://127.0.0.1:$GW_PORT/async-function/echo" "$size"
        read -r stored _ _ < <(jsz "$STREAM")
        r=$(ratio "$W_RPS" "$l_rate")
        row async "gateway /async-function/echo (202, vs raw nats.c)" "$size" "$CONNECTIONS" "$W_RPS" req/s "$W_P50" "$W_P99" \
            "$l_rate" "$r" "" "" "$W_ERR" "$W_RAW"
        best=${BEST_PROXY[$size]:-0}
        r=$(ratio "$W_RPS" "$best")
        sp99=${SYNC_P99[$size]:-0}
        met=no
        if [ "$(meets "${r:-0}" '>=' 1.0)" = yes ] && [ "$(meets "$W_P99" '<=' "$sp99")" = yes ]; then met=yes; fi
        row async "gateway /async-function/echo (202, vs the better proxy; p99 vs sync p99 ${sp99} ms)" "$size" \
            "$CONNECTIONS" "$W_RPS" req/s "$W_P50" "$W_P99" "$best" "$r" "ratio>=1.0 and p99<=sync p99" "$met" \
            "$W_ERR" "$W_RAW"
        log "  stream $STREAM holds $stored messages after the async run"
        echo "async_${size}_stored_messages=$stored" >>"$META"
        purge "$STREAM"
    fi
done
if [ "$LIMITS_ONLY" = 0 ] && stage_on async; then
    kb=$(vmhwm_kb gateway)
    mb=$("$PY" -c "print('%.2f' % ($kb / 1024))")
    row rss "gateway peak RSS after sync+async load" "" "$CONNECTIONS" "$mb" MB "" "" "" "" "" "" 0 ""
    # The accept path with call records on (the default: the record of a
    # waiting call is derived from the stream, no second write) next to a
    # gateway with them off, same run, same stream.
    size=${ACCEPT_SIZE:-1024}
    purge "$STREAM"
    run_wrk gateway_async_rec "http://127.0.0.1:$GW_PORT/async-function/echo" "$size"
    on_rps=$W_RPS
    row async "gateway /async-function/echo, call_records=true" "$size" "$CONNECTIONS" "$W_RPS" req/s \
        "$W_P50" "$W_P99" "" "" "" "" "$W_ERR" "$W_RAW"
    purge "$STREAM"
    start_proc gateway_norec env port="$GW2_PORT" metrics_port=0 nats_url="$NATS_URL" \
        faas_nats_channel="$STREAM" functions_file="$FUNCS" max_body_bytes="$MAX_BODY_BYTES" \
        call_records=false log_level="$LOG_LEVEL" "$BIN_DIR/gateway"
    wait_http gateway_norec "http://127.0.0.1:$GW2_PORT/readyz"
    run_wrk gateway_async_norec "http://127.0.0.1:$GW2_PORT/async-function/echo" "$size"
    r=$(ratio "$on_rps" "$W_RPS")
    row async "gateway /async-function/echo, call_records=false (records on vs off)" "$size" "$CONNECTIONS" \
        "$W_RPS" req/s "$W_P50" "$W_P99" "$on_rps" "$r" "on/off>=0.90" "$(meets "${r:-0}" '>=' 0.90)" \
        "$W_ERR" "$W_RAW"
    stop_proc gateway_norec
    purge "$STREAM"
fi

# ---------------------------------------------------------------- stage 3: drain
# drain invoke workers -> sets D_RATE D_ERR D_RSS_MB
drain() { # invoke workers [max_inflight] [call_records] [count]
    local invoke=$1 workers=$2 inflight=${3:-$WORKER_MAX_INFLIGHT} records=${4:-true}
    local count=${5:-$DRAIN_COUNT} tag="drain_$1_$2w" gw_invoke i n first last extra t0 t_done
    local deadline stored ackp redeliv rss_kb=0 raw
    [ "$inflight" = "$WORKER_MAX_INFLIGHT" ] || tag="${tag}_i$inflight"
    [ "$records" = true ] || tag="${tag}_norec"
    D_TAG=$tag
    raw="$OUT_DIR/raw/$tag.txt"
    [ "$invoke" = gateway ] && gw_invoke=true || gw_invoke=false
    purge "$STREAM"
    run_pub "prefill_$tag" --stream "$STREAM" --count "$count" --size "$DRAIN_SIZE" --function echo \
        --max-pending "$JS_MAX_PENDING"
    read -r stored _ _ < <(jsz "$STREAM")
    [ "$stored" -ge "$count" ] || log "  warning: only $stored of $count messages queued"
    curl -fsS -o /dev/null -X POST "http://127.0.0.1:$ECHO_PORT/reset"
    local cpu0_nats cpu0_gw cpu0_up wcpu=0 hz
    hz=$(getconf CLK_TCK)
    cpu0_nats=$(cpu_ticks nats-server) cpu0_gw=$(cpu_ticks gateway) cpu0_up=$(cpu_ticks upstream)
    t0=$(date +%s%N)
    for ((i = 1; i <= workers; i++)); do
        local mport_var="W${i}_METRICS"
        start_proc "worker$i-$tag" env nats_url="$NATS_URL" faas_nats_channel="$STREAM" \
            faas_nats_queue_group=faas-workers faas_gateway_address=127.0.0.1 faas_gateway_port="$GW_PORT" \
            gateway_invoke="$gw_invoke" functions_file="$FUNCS" max_inflight="$inflight" call_records="$records" \
            ack_wait=60s metrics_port="${!mport_var}" max_body_bytes="$MAX_BODY_BYTES" log_level="$LOG_LEVEL" \
            "$BIN_DIR/queue-worker"
    done
    deadline=$(($(date +%s) + DRAIN_TIMEOUT))
    local prev=-1 stall_until=$(($(date +%s) + DRAIN_STALL))
    n=0
    while :; do
        read -r n first last < <(upstream_count)
        [ "$n" -ge "$count" ] && break
        if [ "$n" != "$prev" ]; then
            prev=$n
            stall_until=$(($(date +%s) + DRAIN_STALL))
        fi
        [ "$(date +%s)" -lt "$stall_until" ] || { log "  no progress for ${DRAIN_STALL}s at $n/$count, giving up"; break; }
        [ "$(date +%s)" -lt "$deadline" ] || { log "  drain timed out at $n/$count"; break; }
        for ((i = 1; i <= workers; i++)); do
            alive "worker$i-$tag" || die "worker$i exited during $tag; see logs/worker$i-$tag.log"
        done
        # The rate comes from the function's own first/last timestamps, so
        # this only finds the end: poll rarely, the machine is being measured.
        sleep 0.25
    done
    t_done=$(date +%s%N)
    # Completion is the ack, not the invocation: wait until the work queue is empty.
    deadline=$(($(date +%s) + DRAIN_STALL))
    while :; do
        read -r stored ackp redeliv < <(jsz "$STREAM")
        [ "$stored" = 0 ] && break
        [ "$(date +%s)" -lt "$deadline" ] || { log "  $stored messages still queued ${DRAIN_STALL}s after the last call"; break; }
        sleep 0.05
    done
    read -r n first last < <(upstream_count)
    local c_nats c_gw c_up
    c_nats=$(($(cpu_ticks nats-server) - cpu0_nats)) c_gw=$(($(cpu_ticks gateway) - cpu0_gw))
    c_up=$(($(cpu_ticks upstream) - cpu0_up))
    local wu=0 ws=0 wv=0 wnv=0
    for ((i = 1; i <= workers; i++)); do
        local kb u s v nv
        wcpu=$((wcpu + $(cpu_ticks "worker$i-$tag")))
        read -r u s v nv < <(cpu_split "worker$i-$tag")
        wu=$((wu + u)) ws=$((ws + s)) wv=$((wv + v)) wnv=$((wnv + nv))
        kb=$(vmhwm_kb "worker$i-$tag")
        [ "$kb" -gt "$rss_kb" ] && rss_kb=$kb
        stop_proc "worker$i-$tag"
    done
    extra=$((n > count ? n - count : 0))
    D_ERR=$((extra + (stored > 0 ? stored : 0) + (n < count ? count - n : 0)))
    # Rate between the first and the last invocation seen by the function; the
    # wall figure (from worker start) includes process start-up and first fetch.
    D_RATE=$("$PY" -c "
n, f, l = $n, $first, $last
print('%.1f' % ((n - 1) / ((l - f) / 1e9)) if n > 1 and l > f else 0)")
    D_WALL=$("$PY" -c "print('%.1f' % ($n / (($t_done - $t0) / 1e9)))")
    D_RSS_MB=$("$PY" -c "print('%.2f' % ($rss_kb / 1024))")
    # CPU per call (user+system, whole drain incl. the settle wait): steadier than
    # the rate on a shared host, since time spent waiting for a core is not in it
    D_CPU=$("$PY" -c "
n = max($n, 1); us = 1e6 / $hz / n
print('worker=%.0f nats=%.0f gateway=%.0f function=%.0f' % ($wcpu * us, $c_nats * us, $c_gw * us, $c_up * us))")
    # The worker's share split into user and system time, and its threads'
    # context switches per call (voluntary: it waited; involuntary: preempted)
    D_WORKER=$("$PY" -c "
n = max($n, 1); us = 1e6 / $hz / n
print('user_us=%.0f system_us=%.0f switches=%.2f preempted=%.2f' % ($wu * us, $ws * us, $wv / n, $wnv / n))")
    {
        echo "tag=$tag invoke=$invoke workers=$workers queued=$count max_inflight=$inflight call_records=$records body_bytes=$DRAIN_SIZE"
        echo "invocations=$n first_ns=$first last_ns=$last extra_invocations=$extra"
        echo "left_in_stream=$stored ack_pending=$ackp redelivered=$redeliv"
        echo "calls_per_s=$D_RATE wall_calls_per_s=$D_WALL worker_peak_rss_mb=$D_RSS_MB"
        echo "cpu_us_per_call $D_CPU"
        echo "worker_per_call $D_WORKER"
    } >"$raw"
    log "  $tag: $(fmt "$D_RATE") calls/s (wall $(fmt "$D_WALL")), errors $D_ERR, worker VmHWM $D_RSS_MB MB"
    log "    CPU us per call: $D_CPU; worker $D_WORKER"
}

if [ "$LIMITS_ONLY" = 0 ] && stage_on drain; then
    log "stage 3: drain $DRAIN_COUNT queued calls of ${DRAIN_SIZE}B (worker max_inflight $WORKER_MAX_INFLIGHT)"
    worker_rss=0
    for invoke in $(stage_on scaling && echo direct gateway); do
        drain "$invoke" 1
        one=$D_RATE
        if [ "$invoke" = direct ]; then
            row drain "1 worker, direct (gateway_invoke=false)" "$DRAIN_SIZE" "$WORKER_MAX_INFLIGHT" "$D_RATE" calls/s \
                "" "" "" "" ">=5000 calls/s" "$(meets "$D_RATE" '>=' 5000)" "$D_ERR" "raw/drain_${invoke}_1w.txt"
        else
            row drain "1 worker, via gateway (gateway_invoke=true)" "$DRAIN_SIZE" "$WORKER_MAX_INFLIGHT" "$D_RATE" calls/s \
                "" "" "" "" "" "" "$D_ERR" "raw/drain_${invoke}_1w.txt"
        fi
        worker_rss=$("$PY" -c "print(max($worker_rss, $D_RSS_MB))")
        drain "$invoke" 2
        r=$(ratio "$D_RATE" "$one")
        label="2 workers, direct (gateway_invoke=false)"
        [ "$invoke" = gateway ] && label="2 workers, via gateway (gateway_invoke=true)"
        row drain "$label" "$DRAIN_SIZE" "$WORKER_MAX_INFLIGHT" "$D_RATE" calls/s "" "" "$one" "$r" \
            "ratio>1 (scales)" "$(meets "${r:-0}" '>' 1)" "$D_ERR" "raw/drain_${invoke}_2w.txt"
        worker_rss=$("$PY" -c "print(max($worker_rss, $D_RSS_MB))")
    done
    stage_on scaling && row rss "queue-worker peak RSS (drain)" "" "$WORKER_MAX_INFLIGHT" "$worker_rss" MB "" "" "" "" "" "" 0 ""

    # Call records on and off, through the gateway: max_inflight=1 against the
    # OpenFaaS CE queue-worker's ~700 calls/s on this machine, max_inflight=50
    # against 10x that.
    slow_count=${DRAIN_COUNT_ONE:-$((DRAIN_COUNT / 5 > 100 ? DRAIN_COUNT / 5 : 100))}
    for records in $(stage_on records && echo true false); do
        drain gateway 1 1 "$records" "$slow_count"
        target="" met=""
        [ "$records" = true ] && target=">=700 calls/s (OpenFaaS CE)" && met=$(meets "$D_RATE" '>=' 700)
        row drain "1 worker max_inflight=1 via gateway, call_records=$records" "$DRAIN_SIZE" 1 "$D_RATE" \
            calls/s "" "" "" "" "$target" "$met" "$D_ERR" "raw/$D_TAG.txt"
        [ "$records" = true ] && one_rec=$D_RATE
    done
    for records in $(stage_on records && echo true false); do
        drain gateway 1 50 "$records"
        target="" met=""
        if [ "$records" = true ]; then
            target=">=7000 calls/s (10x OpenFaaS CE)"
            met=$(meets "$D_RATE" '>=' 7000)
        fi
        row drain "1 worker max_inflight=50 via gateway, call_records=$records" "$DRAIN_SIZE" 50 "$D_RATE" \
            calls/s "" "" "$one_rec" "$(ratio "$D_RATE" "$one_rec")" "$target" "$met" "$D_ERR" "raw/$D_TAG.txt"
    done
fi

# ---------------------------------------------------------------- report
if [ "$MODE" = smoke ]; then
    "$PY" "$BENCH_DIR/report.py" --smoke "$OUT_DIR"
else
    "$PY" "$BENCH_DIR/report.py" "$OUT_DIR"
fi
