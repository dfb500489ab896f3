#!/usr/bin/env bash
# Runs the reliability scenarios serially against binaries built with the fault-injection
# crash points. Some scenarios stop and start the machine's RabbitMQ (rabbitmqctl stop_app /
# start_app) and SecantusDB, so run this alone, after the ordinary tests.
#
# Usage: scripts/faults.sh                        every scenario
#        scripts/faults.sh --only SCENARIO ...    only these (a name or a number; repeatable),
#                                                 e.g. --only rabbitmq-restart --only 6
#        scripts/faults.sh --list                 the scenarios' numbers, names and titles
#        scripts/faults.sh --logs DIR             keep the processes' logs in DIR
#        scripts/faults.sh --amqp-url URL         use another RabbitMQ (also SMS_FAULTS_AMQP_URL);
#                                                 rabbitmqctl then needs RABBITMQ_NODENAME of that node
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

case "${1:-}" in
  -h | --help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
esac

ensure_secantus
ensure_rabbitmq

# A separate target directory keeps these binaries apart from the ordinary (switch-free) build.
# Release builds: the scenarios push tens of thousands of messages through the real processes.
export CARGO_TARGET_DIR="$ROOT/target/faults"
log "building sms-api and sms-dispatcher with fault injection (release)"
# One invocation, so the three binaries share one build of their dependencies.
cargo build --quiet --release -p sms-api -p sms-dispatcher -p sms-faults \
  --features sms-api/fault-injection,sms-dispatcher/fault-injection --bins
"$CARGO_TARGET_DIR/release/sms-faults" \
  --api-bin "$CARGO_TARGET_DIR/release/sms-api" \
  --dispatcher-bin "$CARGO_TARGET_DIR/release/sms-dispatcher" \
  --mongo-bin "$(command -v secantusd-rs)" "$@"
