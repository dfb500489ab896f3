#!/usr/bin/env bash
# Runs SafeCare SMS locally: builds the workspace, makes sure MongoDB (or SecantusDB) and RabbitMQ
# are reachable, creates the indexes and the seed admin, then runs `sms-api serve` and one
# `sms-dispatcher` until Ctrl-C, which stops everything this script started.
#
# Usage: scripts/dev.sh           run until Ctrl-C / SIGTERM
#        scripts/dev.sh --check   start, check /health and the admin login, stop, exit 0 when all is well
#
# Configuration: the real environment wins over `.env` (when present), which wins over the local
# defaults below. Logs go to .dev/log/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  -h | --help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "unknown argument: $1 (use --check or --help)" >&2; exit 2 ;;
esac

# --- configuration ---------------------------------------------------------------------------

# KEY=VALUE lines of .env, for every KEY the real environment does not set.
load_dotenv() {
  local file="$1" line key value
  [ -f "$file" ] || return 0
  log "reading $file (the real environment wins over it)"
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%$'\r'}"
    [[ "$line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key="${BASH_REMATCH[2]}" value="${BASH_REMATCH[3]}"
    if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then value="${BASH_REMATCH[1]}"; fi
    [ -z "${!key+x}" ] && export "$key=$value"
  done <"$file"
  return 0
}
load_dotenv "$ROOT/.env"

# An empty variable counts as unset, as it does for the service itself.
default() { [ -z "${!1:-}" ] && export "$1=$2"; return 0; }
default APP_ENV development
default DJANGO_DEBUG 1
default JWT_SECRET dev-only-secret-change-me
default ALLOWED_HOSTS "localhost,127.0.0.1,[::1]"
default HTTP_ADDR 127.0.0.1:8000
default BASE_PATH /sms
default SEED_ADMIN 1
default SEED_ADMIN_USERNAME admin
default SEED_ADMIN_PASSWORD admin123
default MONGO_URI mongodb://127.0.0.1:27017
default MONGO_DB db_sms
default AMQP_URL "amqp://guest:guest@127.0.0.1:5672/%2f"
default DISPATCHER_METRICS_ADDR 127.0.0.1:9100

DEV="$ROOT/.dev"
LOGS="$DEV/log"
mkdir -p "$LOGS"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

# --- processes we start, stopped on exit -----------------------------------------------------

api_pid="" dispatcher_pid="" mongo_pid="" tail_pid=""

stop_pid() { # PID NAME: SIGTERM, then SIGKILL after 15 s
  local pid="$1" name="$2"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "$name did not stop in 15 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  trap - EXIT INT TERM
  log "stopping"
  stop_pid "$api_pid" sms-api
  stop_pid "$dispatcher_pid" sms-dispatcher
  stop_pid "$mongo_pid" SecantusDB
  stop_pid "$tail_pid" tail
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "dev.sh: $*" >&2; exit 1; }

show_log() { echo "---- last lines of $1 ----" >&2; tail -n 30 "$1" >&2 || true; }

# --- build -----------------------------------------------------------------------------------

log "building (cargo build --bins)"
cargo build --bins

# --- MongoDB ---------------------------------------------------------------------------------

case "$MONGO_URI" in
  mongodb+srv://*) log "using MongoDB at $MONGO_URI (SRV record; not checked)" ;;
  *)
    read -r mongo_host mongo_port < <(mongo_host_port "$MONGO_URI")
    if mongo_ping "$mongo_host" "$mongo_port"; then
      log "using the MongoDB server that answers at $mongo_host:$mongo_port"
    else
      case "$mongo_host" in
        127.0.0.1 | localhost) ;;
        *) log "MONGO_URI points at $mongo_host:$mongo_port, which does not answer; using a local SecantusDB instead" ;;
      esac
      port="$mongo_port"
      if port_open 127.0.0.1 "$port"; then
        port="$(free_port)"
        log "port $mongo_port is taken by something that is not MongoDB; using port $port"
      fi
      ensure_secantus
      log "starting SecantusDB on 127.0.0.1:$port (data in .dev/mongo, log in .dev/mongo.log)"
      mongo_pid="$(start_secantus "$port" "$DEV/mongo")" || fail "SecantusDB did not start"
      export MONGO_URI="mongodb://127.0.0.1:$port"
    fi
    ;;
esac

# --- RabbitMQ --------------------------------------------------------------------------------

amqp_rest="${AMQP_URL#*://}"; amqp_rest="${amqp_rest#*@}"; amqp_rest="${amqp_rest%%/*}"
amqp_host="${amqp_rest%:*}" amqp_port="5672"
[[ "$amqp_rest" == *:* ]] && amqp_port="${amqp_rest##*:}"
case "$amqp_host" in
  127.0.0.1 | localhost) [ "$amqp_port" = 5672 ] && ensure_rabbitmq ;;
esac
port_open "$amqp_host" "$amqp_port" || fail "RabbitMQ is not reachable at $amqp_host:$amqp_port (AMQP_URL)"

# --- database set-up -------------------------------------------------------------------------

log "creating indexes"
"$BIN/sms-api" create-indexes || fail "sms-api create-indexes failed"
log "creating the seed admin (kept when it already exists)"
"$BIN/sms-api" seed-admin || fail "sms-api seed-admin failed"

# --- start the service -----------------------------------------------------------------------

http_host="${HTTP_ADDR%:*}" http_port="${HTTP_ADDR##*:}"
case "$http_host" in
  0.0.0.0 | "") http_host=127.0.0.1 ;;
  "[::]") http_host="[::1]" ;;
esac
url="http://$http_host:$http_port"
port_open "${http_host//[\[\]]/}" "$http_port" \
  && fail "something already listens on $http_host:$http_port; stop it or set HTTP_ADDR"

log "starting sms-api serve on $HTTP_ADDR (log in .dev/log/api.log)"
"$BIN/sms-api" serve >"$LOGS/api.log" 2>&1 &
api_pid=$!
log "starting sms-dispatcher (log in .dev/log/dispatcher.log)"
"$BIN/sms-dispatcher" >"$LOGS/dispatcher.log" 2>&1 &
dispatcher_pid=$!

log "waiting for $url/health"
healthy=0 deadline=$((SECONDS + 60))
while [ "$SECONDS" -lt "$deadline" ]; do
  if ! kill -0 "$api_pid" 2>/dev/null; then show_log "$LOGS/api.log"; fail "sms-api exited during start-up"; fi
  if curl -fsS -o /dev/null --max-time 5 "$url/health" 2>/dev/null; then healthy=1; break; fi
  sleep 1
done
if [ "$healthy" -ne 1 ]; then
  curl -sS --max-time 5 "$url/health" >&2 || true; echo >&2
  show_log "$LOGS/api.log"
  fail "$url/health did not report healthy within 60 s"
fi

# A dispatcher that has already stopped cannot stage messages for agents: say so, but go on.
dispatcher_warned=0
dispatcher_check() {
  [ "$dispatcher_warned" -eq 0 ] && [ -n "$dispatcher_pid" ] || return 0
  kill -0 "$dispatcher_pid" 2>/dev/null && return 0
  local rc=0
  wait "$dispatcher_pid" 2>/dev/null || rc=$?
  dispatcher_warned=1
  echo "WARNING: sms-dispatcher exited (status $rc); messages are not staged for agents until one runs." >&2
  echo "         See .dev/log/dispatcher.log." >&2
}
sleep 1
dispatcher_check

# --- login check and banner ------------------------------------------------------------------

login_body="$(python3 -c 'import json, os; print(json.dumps({"username": os.environ["SEED_ADMIN_USERNAME"], "password": os.environ["SEED_ADMIN_PASSWORD"]}))')"
login_url="$url${BASE_PATH%/}/auth/login"
login_response="$(curl -sS --max-time 10 -w '\n%{http_code}' -X POST "$login_url" \
  -H 'Content-Type: application/json' -d "$login_body")" || fail "POST $login_url failed"
login_status="${login_response##*$'\n'}"
if [ "$login_status" != 200 ] || [[ "$login_response" != *'"access_token"'* ]]; then
  echo "${login_response%$'\n'*}" >&2
  fail "POST $login_url answered $login_status, not a token. An admin made earlier keeps its first password: reset it with rm -rf .dev/mongo when the database is the local SecantusDB."
fi
log "admin login works"
issued="$("$BIN/sms-api" issue-token --sub "$SEED_ADMIN_USERNAME")" || fail "sms-api issue-token failed"
issued_status="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 \
  -H "Authorization: Bearer $issued" "$url${BASE_PATH%/}/admin/api-keys")" || fail "GET /admin/api-keys failed"
[ "$issued_status" = 200 ] || fail "GET /admin/api-keys refused the token of sms-api issue-token ($issued_status)"
log "sms-api issue-token works"

quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
bin_shown="${BIN#"$ROOT"/}"
# A URL with the password of its user part replaced by ***.
masked() { sed -E 's#^([a-z+]+://[^:/@]+):[^@]*@#\1:***@#' <<<"$1"; }
cat <<EOF

  SafeCare SMS is running.

  API          $url/
EOF
[ -n "${BASE_PATH%/}" ] && echo "               $url${BASE_PATH%/}/"
cat <<EOF
  Health       $url${BASE_PATH%/}/health
  MongoDB      $(masked "$MONGO_URI") (database $MONGO_DB)
  RabbitMQ     $(masked "$AMQP_URL")
  Admin login  username $(quote "$SEED_ADMIN_USERNAME"), password $(quote "$SEED_ADMIN_PASSWORD")
  Metrics      $url${BASE_PATH%/}/metrics, dispatcher http://${DISPATCHER_METRICS_ADDR/0.0.0.0/127.0.0.1}/metrics
  Logs         .dev/log/api.log, .dev/log/dispatcher.log

  Get an operator token:
    curl -s -X POST $login_url -H 'Content-Type: application/json' -d $(quote "$login_body")
  or, with the same JWT_SECRET in the environment:
    $bin_shown/sms-api issue-token --sub $(quote "$SEED_ADMIN_USERNAME")

EOF

if [ "$check" -eq 1 ]; then
  log "check passed; stopping"
  exit 0
fi

log "press Ctrl-C to stop; the API's log follows"
tail -n 0 -f "$LOGS/api.log" &
tail_pid=$!
while kill -0 "$api_pid" 2>/dev/null; do
  dispatcher_check
  sleep 1
done
api_rc=0
wait "$api_pid" 2>/dev/null || api_rc=$?
[ "$api_rc" -eq 0 ] && { log "sms-api stopped"; exit 0; }
show_log "$LOGS/api.log"
fail "sms-api stopped (status $api_rc)"
