#!/usr/bin/env bash
# Benchmarks the whole service on this machine: starts a throw-away SecantusDB, builds the release
# binaries, runs sms-api and two sms-dispatchers against a fresh database and AMQP prefix, runs
# sms-bench against them while sampling the API's memory, then stops and removes everything.
#
# Usage: scripts/bench.sh [sms-bench options]    (defaults: --messages 20000 --agents 20)
#        e.g. scripts/bench.sh --messages 5000 --agents 5
#
# The figures go to target/bench/sms-bench-<time>.json (with the processes' logs and /metrics
# snapshots in target/bench/sms-bench-<time>/); the path is printed at the end.
# RabbitMQ must answer on AMQP_URL (default: the local broker, started when installed).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

case "${1:-}" in
  -h | --help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
esac

AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
stamp="$(date -u +%Y%m%d-%H%M%S)"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench"
json="$OUT/sms-bench-$stamp.json"
logs="$OUT/sms-bench-$stamp"
mkdir -p "$logs"

id="$(python3 -c 'import uuid; print(uuid.uuid4().hex[:10])')"
db_name="sms_bench_$id"
prefix="bench-$id"
jwt_secret="bench-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
work="$(mktemp -d /tmp/sms-bench.XXXXXX)"

# --- processes we start, stopped on exit -----------------------------------------------------

mongo_pid="" api_pid="" d1_pid="" d2_pid="" sampler_pid="" amqp_used=0

stop_pid() { # PID NAME: SIGTERM, then SIGKILL after 15 s
  local pid="$1" name="$2"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }; sleep 0.1; done
  log "$name did not stop in 15 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  trap - EXIT INT TERM
  stop_pid "$sampler_pid" "memory sampler"
  stop_pid "$api_pid" sms-api
  stop_pid "$d1_pid" "sms-dispatcher 1"
  stop_pid "$d2_pid" "sms-dispatcher 2"
  if [ "$amqp_used" = 1 ] && [ -x "$BIN/sms-bench" ]; then
    "$BIN/sms-bench" remove-amqp --amqp-url "$AMQP_URL" --amqp-prefix "$prefix" 2>/dev/null \
      || log "could not remove the RabbitMQ objects of $prefix"
  fi
  stop_pid "$mongo_pid" SecantusDB
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "bench.sh: $*" >&2; exit 1; }
show_log() { echo "---- last lines of $1 ----" >&2; tail -n 30 "$1" >&2 || true; }

# --- dependencies and build ------------------------------------------------------------------

ensure_secantus
case "$AMQP_URL" in
  *@127.0.0.1:5672/* | *@localhost:5672/*) ensure_rabbitmq ;;
esac

log "building release binaries (cargo build --release -p sms-api -p sms-dispatcher -p sms-bench)"
cargo build --release -p sms-api -p sms-dispatcher -p sms-bench

mongo_port="$(free_port)"
log "starting SecantusDB on 127.0.0.1:$mongo_port (data in $work)"
mongo_pid="$(start_secantus "$mongo_port" "$work/db")" || fail "SecantusDB did not start"
mongo_uri="mongodb://127.0.0.1:$mongo_port"

# --- the service -----------------------------------------------------------------------------

api_port="$(free_port)"
api="http://127.0.0.1:$api_port"
common_env=(
  "MONGO_URI=$mongo_uri" "MONGO_DB=$db_name"
  "AMQP_URL=$AMQP_URL" "AMQP_PREFIX=$prefix"
  "JWT_SECRET=$jwt_secret"
  "APP_ENV=development" "DJANGO_DEBUG=0" "LOG_FORMAT=text" "RUST_LOG=warn"
)
amqp_used=1

log "starting sms-api on $api (database $db_name, AMQP prefix $prefix)"
env "${common_env[@]}" \
  HTTP_ADDR="127.0.0.1:$api_port" ALLOWED_HOSTS="127.0.0.1,localhost" \
  AGENT_RATE_LIMIT_PER_MIN=1000000 APIKEY_RATE_LIMIT_PER_DAY_DEFAULT=1000000000 \
  SEED_ADMIN=1 SEED_ADMIN_USERNAME=admin SEED_ADMIN_PASSWORD="bench-$id" \
  "$BIN/sms-api" serve >"$logs/api.log" 2>&1 &
api_pid=$!

metrics_ports=()
for n in 1 2; do
  port="$(free_port)"
  metrics_ports+=("$port")
  env "${common_env[@]}" DISPATCHER_METRICS_ADDR="127.0.0.1:$port" \
    "$BIN/sms-dispatcher" >"$logs/dispatcher-$n.log" 2>&1 &
  if [ "$n" = 1 ]; then d1_pid=$!; else d2_pid=$!; fi
done
log "started two sms-dispatchers (metrics on 127.0.0.1:${metrics_ports[0]} and :${metrics_ports[1]})"

for _ in $(seq 1 300); do
  curl -fsS "$api/health" >/dev/null 2>&1 && break
  kill -0 "$api_pid" 2>/dev/null || { show_log "$logs/api.log"; fail "sms-api exited"; }
  sleep 0.2
done
curl -fsS "$api/health" >/dev/null 2>&1 || { show_log "$logs/api.log"; fail "sms-api is not healthy after 60 s"; }
for pid in "$d1_pid" "$d2_pid"; do
  kill -0 "$pid" 2>/dev/null || { show_log "$logs/dispatcher-1.log"; show_log "$logs/dispatcher-2.log"; fail "a dispatcher exited"; }
done

# Resident memory of the API, sampled twice a second (kB).
(
  while kill -0 "$api_pid" 2>/dev/null; do
    awk '/^VmRSS:/ {print $2}' "/proc/$api_pid/status" 2>/dev/null || true
    sleep 0.5
  done
) >"$logs/api-rss-kb.log" &
sampler_pid=$!

# --- the benchmark ---------------------------------------------------------------------------

log "running sms-bench"
load_before="$(cut -d' ' -f1 /proc/loadavg)"
"$BIN/sms-bench" --api "$api" --mongo-uri "$mongo_uri" --mongo-db "$db_name" \
  --jwt-secret "$jwt_secret" --messages 20000 --agents 20 --json "$json" "$@"

hwm_kb="$(awk '/^VmHWM:/ {print $2}' "/proc/$api_pid/status")"
sampled_kb="$(sort -n "$logs/api-rss-kb.log" | tail -n 1)"
curl -fsS "$api/metrics" >"$logs/api-metrics.txt" 2>/dev/null || true
for n in 1 2; do
  curl -fsS "http://127.0.0.1:${metrics_ports[$((n - 1))]}/metrics" >"$logs/dispatcher-$n-metrics.txt" 2>/dev/null || true
done

python3 - "$json" "${hwm_kb:-0}" "${sampled_kb:-0}" "$load_before" <<'PY'
import json, os, sys
path, hwm_kb, sampled_kb = sys.argv[1], int(sys.argv[2] or 0), int(sys.argv[3] or 0)
with open(path) as f:
    data = json.load(f)
data["api_peak_rss_mb"] = round(max(hwm_kb, sampled_kb) / 1024, 1)
data["api_sampled_max_rss_mb"] = round(sampled_kb / 1024, 1)
# The machine, and how busy it was with other work (1-minute load average).
data["machine_cores"] = os.cpu_count()
data["load_avg_before"] = float(sys.argv[4])
data["load_avg_after"] = float(open("/proc/loadavg").read().split()[0])
with open(path, "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")
print(f"  {'API peak RSS (VmHWM)':<30} {data['api_peak_rss_mb']:>11.1f} MB  target < 150")
PY

log "figures: $json"
log "logs and /metrics snapshots: $logs/"
