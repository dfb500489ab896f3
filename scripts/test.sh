#!/usr/bin/env bash
# Runs the whole test suite against a throw-away SecantusDB and the local RabbitMQ.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_secantus
ensure_rabbitmq

data="$(mktemp -d /tmp/sms-test-mongo.XXXXXX)"
port="$(free_port)"
pid="$(start_secantus "$port" "$data/db")"
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

export TEST_MONGO_URI="mongodb://127.0.0.1:$port"
export TEST_AMQP_URL="${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
log "SecantusDB on $TEST_MONGO_URI (data in $data)"
cargo test --workspace "$@"
