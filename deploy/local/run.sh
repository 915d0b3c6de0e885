#!/usr/bin/env bash
# The local stack: installs what is missing, builds, then runs nats-server -js,
# the process provider, the gateway in provider mode, two queue-workers and a
# callback recorder, all on 127.0.0.1, and deploys the demo functions of
# deploy/local/stack.yml (long-task, figlet, echo) through the gateway with the
# requests `faas-cli deploy` makes. Ctrl-C stops everything.
# State and logs live in .run/local/ (override with CFAAS_RUN_DIR); the
# provider's deployments survive a restart. CFAAS_SKIP_SETUP=1 skips setup and
# build (tests use it).
set -euo pipefail
# Debian installs nats-server in /usr/sbin, which a normal user's PATH lacks.
export PATH="$PATH:/usr/sbin:/sbin"
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
if [ "${CFAAS_SKIP_SETUP:-0}" != 1 ]; then
  ./scripts/setup.sh
  ./scripts/build.sh
fi

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

# faas-cli deploy: PUT /system/functions, and POST when the function is new (404).
deploy() { # name fprocess [extra envVars JSON members]
  local body
  body=$(printf '{"service":"%s","image":"cfaas/%s:latest","envVars":{"fprocess":"%s"%s},"labels":{},"annotations":{}}' \
    "$1" "$1" "$2" "${3:-}")
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
    -H 'User-Agent: faas-cli/0.16.37' -d "$body" http://127.0.0.1:8080/system/functions)
  if [ "$code" = 404 ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      -H 'User-Agent: faas-cli/0.16.37' -d "$body" http://127.0.0.1:8080/system/functions)
  fi
  case "$code" in 200|202) echo "Deployed $1 ($code)." ;; *) echo "deploy $1: status $code" >&2; return 1 ;; esac
}

mkdir -p "$run/provider"
start nats nats-server -js -a 127.0.0.1 -p 4222 -m 8222 -sd "$run/nats"
start provider env port=8081 bind_address=127.0.0.1 provider_state_dir="$run/provider" \
  watchdog_path="$bin/watchdog" "$bin/provider"
start recorder /usr/bin/python3 "$top/deploy/local/recorder.py" --port 8099 --dir "$run/callbacks"
wait_http http://127.0.0.1:8222/healthz
wait_http http://127.0.0.1:8081/healthz
start gateway env port=8080 metrics_port=8082 nats_url=nats://127.0.0.1:4222 \
  functions_provider_url=http://127.0.0.1:8081 "$bin/gateway"
for i in 1 2; do
  start "queue-worker-$i" env nats_url=nats://127.0.0.1:4222 faas_gateway_address=127.0.0.1 \
    faas_gateway_port=8080 metrics_port=$((8183 + i)) max_inflight=10 ack_wait=30s \
    "$bin/queue-worker"
done
wait_http http://127.0.0.1:8080/readyz
# the functions of deploy/local/stack.yml, as faas-cli deploy -f sends them
deploy long-task "sleep 1" ',"exec_timeout":"30s"'
deploy figlet figlet
deploy echo cat
for fn in long-task figlet echo; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:8080/system/function/$fn" 2>/dev/null \
      | grep -q '"availableReplicas":[1-9]' && break
    sleep 0.1
  done
done

cat <<INFO

The local stack is up:
  gateway        http://127.0.0.1:8080   (metrics http://127.0.0.1:8082/metrics)
  provider       http://127.0.0.1:8081   (process provider: one watchdog process per replica)
  functions      long-task (sleep 1), figlet, echo (cat), deployed from deploy/local/stack.yml
  recorder       http://127.0.0.1:8099/cb  -> callbacks stored in $run/callbacks/
  queue-workers  2 replicas (metrics :8184, :8185)
  logs           $run/logs/   (NATS store: $run/nats)

Try:  curl -i http://127.0.0.1:8080/async-function/figlet -d hello -H "X-Callback-Url: http://127.0.0.1:8099/cb"
The queue-workers' log follows. Ctrl-C stops the stack.

INFO
tail -n +1 -F "$run/logs/queue-worker-1.log" "$run/logs/queue-worker-2.log" &
pids+=($!)
wait "${pids[0]}"
