#!/usr/bin/env bash
# Checks the running API against its own OpenAPI document with schemathesis: no 5xx, and every
# status, content type, header and body as documented. Starts its own SecantusDB, API and
# dispatcher on free ports; leaves nothing behind.
# Usage: scripts/schemathesis.sh [extra schemathesis arguments]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

SCHEMATHESIS_VERSION="4.32.5"
venv="$ROOT/target/schemathesis-venv"
if [ ! -x "$venv/bin/st" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

ensure_secantus
ensure_rabbitmq
cargo build --quiet -p sms-api -p sms-dispatcher --bins

scratch_stack sms-schemathesis
api_port="$(free_port)"
id="st$(date +%s)$$"
export MONGO_URI="mongodb://127.0.0.1:$mongo_port" MONGO_DB="sms_$id" AMQP_PREFIX="$id" \
  JWT_SECRET="schemathesis-secret" HTTP_ADDR="127.0.0.1:$api_port" ALLOWED_HOSTS="127.0.0.1,localhost" \
  SEED_ADMIN=1 SEED_ADMIN_PASSWORD="schemathesis-admin" DISPATCHER_METRICS_ADDR="127.0.0.1:0" RUST_LOG=warn
target/debug/sms-api serve >"$work/api.log" 2>&1 & pids+=("$!")
target/debug/sms-dispatcher >"$work/dispatcher.log" 2>&1 & pids+=("$!")
wait_port "$api_port" || { tail -20 "$work/api.log" >&2; exit 1; }

jwt="$(target/debug/sms-api issue-token --sub schemathesis)"

log "schemathesis against http://127.0.0.1:$api_port/openapi.json"
status=0
"$venv/bin/st" run "http://127.0.0.1:$api_port/openapi.json" \
  --url "http://127.0.0.1:$api_port" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-examples 30 --request-timeout 20 --no-color \
  -H "Authorization: Bearer $jwt" "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- API log (last 40 lines)"; tail -40 "$work/api.log"
fi
exit "$status"
