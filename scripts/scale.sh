#!/usr/bin/env bash
# Times the service's reads against large histories: for each size, starts a throw-away
# SecantusDB and a release sms-api (which creates the indexes) on a fresh database, runs
# `sms-bench scale` (loads the messages, recounts the counters, times the calls), and stops and
# removes everything. Prints one table per size, then the comparison across sizes.
#
# Usage: scripts/scale.sh [--sizes 10000,100000,1000000] [sms-bench scale options]
#        e.g. scripts/scale.sh --sizes 10000 --repeats 5
#
# Figures: target/bench/scale-<time>/scale-<size>.json and summary.md (the path is printed).
# RabbitMQ must answer on AMQP_URL (the API's health needs it; nothing is sent through it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

case "${1:-}" in
  -h | --help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
esac

sizes="10000,100000,1000000"
if [ "${1:-}" = "--sizes" ]; then sizes="$2"; shift 2; fi

AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench/scale-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

ensure_secantus
case "$AMQP_URL" in
  *@127.0.0.1:5672/* | *@localhost:5672/*) ensure_rabbitmq ;;
esac
log "building release binaries (cargo build --release -p sms-api -p sms-bench)"
cargo build --release -p sms-api -p sms-bench
# Copies, so that another build into the shared target folder cannot swap them mid-run.
mkdir -p "$OUT/bin"
cp "$BIN/sms-api" "$BIN/sms-bench" "$OUT/bin/"
BIN="$OUT/bin"

api_pid="" mongo_pid="" prefix="" work=""
stop() {
  for pid in "$api_pid" "$mongo_pid"; do
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$prefix" ]; then
    "$BIN/sms-bench" remove-amqp --amqp-url "$AMQP_URL" --amqp-prefix "$prefix" 2>/dev/null || true
  fi
  [ -n "$work" ] && rm -rf "$work"
  api_pid="" mongo_pid="" prefix="" work=""
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

IFS=',' read -r -a size_list <<<"$sizes"
for size in "${size_list[@]}"; do
  id="$(python3 -c 'import uuid; print(uuid.uuid4().hex[:10])')"
  db_name="sms_scale_$id" prefix="scale-$id"
  jwt_secret="scale-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
  work="$(mktemp -d /tmp/sms-scale.XXXXXX)"
  mongo_port="$(free_port)" api_port="$(free_port)"
  mongo_pid="$(start_secantus "$mongo_port" "$work/db")"
  api="http://127.0.0.1:$api_port"
  log "size $size: SecantusDB on :$mongo_port, sms-api on $api (database $db_name)"
  env MONGO_URI="mongodb://127.0.0.1:$mongo_port" MONGO_DB="$db_name" \
    AMQP_URL="$AMQP_URL" AMQP_PREFIX="$prefix" JWT_SECRET="$jwt_secret" \
    APP_ENV=development DJANGO_DEBUG=0 LOG_FORMAT=text RUST_LOG=warn \
    HTTP_ADDR="127.0.0.1:$api_port" ALLOWED_HOSTS="127.0.0.1,localhost" \
    AGENT_RATE_LIMIT_PER_MIN=1000000 APIKEY_RATE_LIMIT_PER_DAY_DEFAULT=1000000000 \
    SEED_ADMIN=1 SEED_ADMIN_USERNAME=admin SEED_ADMIN_PASSWORD="scale-$id" \
    "$BIN/sms-api" serve >"$OUT/api-$size.log" 2>&1 &
  api_pid=$!
  for _ in $(seq 1 300); do
    curl -fsS "$api/health" >/dev/null 2>&1 && break
    kill -0 "$api_pid" 2>/dev/null || { tail -n 30 "$OUT/api-$size.log" >&2; exit 1; }
    sleep 0.2
  done
  load_before="$(cut -d' ' -f1 /proc/loadavg)"
  "$BIN/sms-bench" scale --api "$api" --mongo-uri "mongodb://127.0.0.1:$mongo_port" \
    --mongo-db "$db_name" --jwt-secret "$jwt_secret" --messages "$size" \
    --json "$OUT/scale-$size.json" "$@" | tee "$OUT/table-$size.md"
  python3 - "$OUT/scale-$size.json" "$load_before" <<'PY'
import json, os, sys
path = sys.argv[1]
data = json.load(open(path))
data["machine_cores"] = os.cpu_count()
data["load_avg_before"] = float(sys.argv[2])
data["load_avg_after"] = float(open("/proc/loadavg").read().split()[0])
json.dump(data, open(path, "w"), indent=2)
PY
  stop
done

python3 - "$OUT" "${size_list[@]}" <<'PY' | tee "$OUT/summary.md"
import json, sys
out, sizes = sys.argv[1], sys.argv[2:]
runs = [json.load(open(f"{out}/scale-{s}.json")) for s in sizes]
names = [c["name"] for c in runs[0]["calls"]]
def cell(run, name):
    c = next(c for c in run["calls"] if c["name"] == name)
    text = f"{c['median_ms']:.0f}"
    if c.get("ratio") is not None:
        text += f" / {c['plain_median_ms']:.0f} = {c['ratio']:.2f}×"
    # The targets are set at 1,000,000 messages.
    return text + ("" if c["met"] or int(run["messages"]) != 1000000 else " **✗**")
print("median ms of each call; for a broad list, / the plain find's median = the ratio; ✗: a target missed at 1,000,000\n")
print("| call | " + " | ".join(f"{int(s):,}" for s in sizes) + " |")
print("| --- |" + " --- |" * len(sizes))
for name in names:
    print(f"| {name} | " + " | ".join(cell(r, name) for r in runs) + " |")
poll = {int(r["messages"]): next(c for c in r["calls"] if c["name"] == "phone's poll")["median_ms"] for r in runs}
if 10000 in poll and 1000000 in poll:
    growth = poll[1000000] / poll[10000]
    print(f"\nphone's poll at 1,000,000 / at 10,000: {growth:.2f} (target ≤ 2): {'met' if growth <= 2 else 'NOT met'}")
for r in runs:
    l = r["load"]
    print(f"\n{int(r['messages']):,}: loaded in {l['insert_seconds']:.1f} s, recounted in "
          f"{l['recount_seconds']:.1f} s; load average {r['load_avg_before']} before, {r['load_avg_after']} after")
PY
log "figures: $OUT/"
