#!/usr/bin/env bash
# Measures how much the API's resident memory grows while it streams a CSV export of N messages
# (default 200000). Starts its own SecantusDB and a release sms-api; fills the database through
# POST /requests (5,000 recipients per request); prints the figures.
# Usage: scripts/export-memory.sh [N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
n="${1:-200000}"

ensure_secantus
ensure_rabbitmq
cargo build --quiet --release -p sms-api

scratch_stack sms-export-memory
api_port="$(free_port)"
export MONGO_URI="mongodb://127.0.0.1:$mongo_port" MONGO_DB="sms_export_$$" AMQP_PREFIX="export-$$" \
  JWT_SECRET="export-memory-secret" HTTP_ADDR="127.0.0.1:$api_port" ALLOWED_HOSTS="127.0.0.1" \
  SEED_ADMIN=1 SEED_ADMIN_PASSWORD="export-admin" RUST_LOG=warn BLOCK_INTERNATIONAL=1
target/release/sms-api serve >"$work/api.log" 2>&1 & api_pid=$!; pids+=("$api_pid")
wait_port "$api_port" || { tail -20 "$work/api.log" >&2; exit 1; }

jwt="$(target/release/sms-api issue-token --sub export-memory)"
log "storing $n messages through the API"
JWT="$jwt" python3 - "$api_port" "$n" <<'PY'
import json, os, sys, urllib.request
port, n = sys.argv[1], int(sys.argv[2])
base = f"http://127.0.0.1:{port}"
auth = {"Authorization": f"Bearer {os.environ['JWT']}", "Content-Type": "application/json"}
def call(method, path, payload=None):
    req = urllib.request.Request(base + path, method=method, headers=auth,
                                 data=json.dumps(payload).encode() if payload is not None else None)
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read() or b"null")
t = call("POST", "/templates", {"name": "export", "content": "Mã OTP của bạn là {CODE}, \"hết hạn\", sau 5 phút"})
call("POST", f"/templates/{t['id']}/approve")
agent = call("POST", "/agent/register", {"device_id": "export-phone"})
done = 0
while done < n:
    k = min(5000, n - done)
    msgs = [{"to": "09%08d" % (10_000_000 + done + i), "variables": {"CODE": str(done + i)}} for i in range(k)]
    call("POST", "/requests", {"template_id": t["id"], "agent_id": agent["agent_id"], "messages": msgs})
    done += k
print(f"stored {done} messages", file=sys.stderr)
PY


url="http://127.0.0.1:$api_port/reports/export.csv"
# Warm up (connection pools, first cursor) with a small export, then reset the peak counter.
curl -sf -o /dev/null -H "Authorization: Bearer $jwt" "$url?from=2999-01-01"
sleep 1
echo 5 > "/proc/$api_pid/clear_refs"
before_kb="$(awk '/VmRSS/ {print $2}' "/proc/$api_pid/status")"
start="$(date +%s.%N)"
rows="$(curl -sf -H "Authorization: Bearer $jwt" "$url" | wc -l)"
secs="$(python3 -c "import time; print(round(time.time() - $start, 1))")"
peak_kb="$(awk '/VmHWM/ {print $2}' "/proc/$api_pid/status")"
growth_mb="$(python3 -c "print(round(($peak_kb - $before_kb) / 1024, 1))")"
echo "exported $((rows - 1)) rows in ${secs}s"
echo "api resident before: $((before_kb / 1024)) MB; peak during export: $((peak_kb / 1024)) MB; growth: ${growth_mb} MB"
