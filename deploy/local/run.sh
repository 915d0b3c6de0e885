#!/usr/bin/env bash
# The local stack: installs what is missing, builds, then runs nats-server -js,
# the gateway, two queue-workers, three watchdog functions (long-task, figlet,
# echo) and a callback recorder, all on 127.0.0.1. Ctrl-C stops everything.
# State and logs live in .run/local/ (override with CFAAS_RUN_DIR).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
./scripts/setup.sh
./scripts/build.sh

run=${CFAAS_RUN_DIR:-$top/.run/local}
bin=$top/build/bin
mkdir -p "$run/logs" "$run/nats" "$run/callbacks"
rm -f "$run"/callbacks/*.json

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping the local stack..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "stopped."
}
trap cleanup INT TERM EXIT

start() { # name, then command; env set by the caller with `env`
  local name=$1; shift
  "$@" >"$run/logs/$name.log" 2>&1 &
  pids+=($!)
}

wait_http() { # url
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for $1 (see $run/logs/)" >&2; return 1
}

cat >"$run/functions.json" <<JSON
{"functions": [
  {"name": "long-task", "namespace": "openfaas-fn", "url": "http://127.0.0.1:8091", "annotations": {}, "labels": {}},
  {"name": "figlet",    "namespace": "openfaas-fn", "url": "http://127.0.0.1:8092", "annotations": {}, "labels": {}},
  {"name": "echo",      "namespace": "openfaas-fn", "url": "http://127.0.0.1:8093", "annotations": {}, "labels": {}}
]}
JSON

start nats nats-server -js -a 127.0.0.1 -p 4222 -m 8222 -sd "$run/nats"
start long-task env fprocess="sleep 1" port=8091 exec_timeout=30s "$bin/watchdog"
start figlet env fprocess="figlet" port=8092 "$bin/watchdog"
start echo env fprocess="cat" port=8093 "$bin/watchdog"
start recorder /usr/bin/python3 "$top/deploy/local/recorder.py" --port 8099 --dir "$run/callbacks"
wait_http http://127.0.0.1:8222/healthz
start gateway env port=8080 metrics_port=8082 nats_url=nats://127.0.0.1:4222 \
  functions_file="$run/functions.json" "$bin/gateway"
for i in 1 2; do
  start "queue-worker-$i" env nats_url=nats://127.0.0.1:4222 faas_gateway_address=127.0.0.1 \
    faas_gateway_port=8080 metrics_port=$((8183 + i)) max_inflight=10 ack_wait=30s \
    "$bin/queue-worker"
done
wait_http http://127.0.0.1:8080/readyz
for p in 8091 8092 8093; do wait_http "http://127.0.0.1:$p/_/health"; done

cat <<INFO

The local stack is up:
  gateway        http://127.0.0.1:8080   (metrics http://127.0.0.1:8082/metrics)
  functions      long-task (sleep 1), figlet, echo (cat)
  recorder       http://127.0.0.1:8099/cb  -> callbacks stored in $run/callbacks/
  queue-workers  2 replicas (metrics :8184, :8185)
  logs           $run/logs/   (NATS store: $run/nats)

Try:  curl -i http://127.0.0.1:8080/async-function/figlet -d hello -H "X-Callback-Url: http://127.0.0.1:8099/cb"
The queue-workers' log follows. Ctrl-C stops the stack.

INFO
tail -n +1 -F "$run/logs/queue-worker-1.log" "$run/logs/queue-worker-2.log" &
pids+=($!)
wait "${pids[0]}"
