#!/usr/bin/env bash
# Runs scripts/bench.sh with its SecantusDB sampled by `perf` (49 Hz, DWARF call stacks), then
# prints where the database spent its CPU during the last busy stretch of the run: the pipeline
# phase (the bench's last phase; `--last-seconds`, default 16, is its length in seconds).
#
# Usage: scripts/db-profile.sh OUT_DIR [--last-seconds N]
#   OUT_DIR/perf.data      the samples (`perf report -i OUT_DIR/perf.data --time A,B ...`)
#   OUT_DIR/bench.log      scripts/bench.sh's output
#   OUT_DIR/commands.txt   the share of the window's samples under each command handler
# Needs `perf` (Debian: linux-perf) and permission to trace the database (root, or
# kernel.perf_event_paranoid <= 1).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

case "${1:-}" in
  "" | -h | --help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
esac
out="$1"; shift
last=16
if [ "${1:-}" = "--last-seconds" ]; then last="$2"; fi
command -v perf >/dev/null || { echo "db-profile.sh: perf is not installed" >&2; exit 1; }
mkdir -p "$out"

before="$(pgrep -x secantusd-rs || true)"
scripts/bench.sh >"$out/bench.log" 2>&1 &
bench=$!
db=""
while [ -z "$db" ] && kill -0 "$bench" 2>/dev/null; do
  for p in $(pgrep -x secantusd-rs || true); do grep -qx "$p" <<<"$before" || db="$p"; done
  sleep 0.5
done
[ -n "$db" ] || { echo "db-profile.sh: the bench's SecantusDB never started" >&2; exit 1; }
log "sampling SecantusDB (pid $db)"
perf record -q -F 49 --call-graph dwarf,16384 -p "$db" -o "$out/perf.data" 2>/dev/null &
sampler=$!
wait "$bench" || { echo "db-profile.sh: scripts/bench.sh failed; see $out/bench.log" >&2; exit 1; }
kill -INT "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true

# The window: the last `last` seconds in which the database was busy (over a third of the
# busiest second's samples), which is where the bench ends its pipeline phase.
window="$(perf script -i "$out/perf.data" -F time 2>/dev/null | python3 -c '
import collections, sys
per = collections.Counter(int(float(l.strip().rstrip(":"))) for l in sys.stdin if l.strip())
busy = [s for s in sorted(per) if per[s] > max(per.values()) / 3]
end = busy[-1] + 1
print(f"{end - int(sys.argv[1])},{end}")' "$last")"
perf report -i "$out/perf.data" --time "$window" --children --sort sym -g none 2>/dev/null \
  | grep -E "secantus_commands::(crud::(insert|update_in|delete)|find::find|aggregate::aggregate)$|secantus_storage::Storage::scan_docs$" \
  >"$out/commands.txt" || true
grep -q "scan_docs" "$out/commands.txt" || echo "(no sample in a whole-collection scan)" >>"$out/commands.txt"
echo "window (perf time, seconds): $window"
cat "$out/commands.txt"
