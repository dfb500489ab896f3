# Shared shell helpers for the project's scripts. Source it; do not run it.

SECANTUS_VERSION="0.5.3-beta.196"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

# True when something accepts TCP connections on HOST PORT.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# host and port of a mongodb:// URI (first host; default port 27017).
mongo_host_port() {
  local rest="${1#mongodb://}"; rest="${rest#*@}"; rest="${rest%%/*}"; rest="${rest%%,*}"
  local host="${rest%%:*}" port="27017"
  [[ "$rest" == *:* ]] && port="${rest##*:}"
  echo "$host $port"
}

# Installs the MongoDB-compatible development server (SecantusDB) when missing.
ensure_secantus() {
  command -v secantusd-rs >/dev/null 2>&1 && return 0
  log "installing SecantusDB $SECANTUS_VERSION (one time, about 6 minutes)"
  if ! command -v cmake >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
      $sudo apt-get update -qq && $sudo apt-get install -y -qq cmake >/dev/null
    else
      echo "cmake is required to build SecantusDB; install it and retry" >&2; return 1
    fi
  fi
  cargo install secantus-mdb --version "$SECANTUS_VERSION" --locked --ignore-rust-version
}

# Starts SecantusDB on PORT with data in DIR, logging to DIR.log; waits until it accepts
# connections. Prints its pid.
start_secantus() {
  local port="$1" dir="$2"
  mkdir -p "$dir"
  secantusd-rs --host 127.0.0.1 --port "$port" --storage-path "$dir" --log-level WARNING \
    >"$dir.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 200); do
    if port_open 127.0.0.1 "$port"; then echo "$pid"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "SecantusDB did not start; see $dir.log" >&2
  tail -20 "$dir.log" >&2 || true
  return 1
}

# Waits up to 20 s until something accepts connections on 127.0.0.1 PORT.
wait_port() {
  for _ in $(seq 1 100); do port_open 127.0.0.1 "$1" && return 0; sleep 0.2; done
  return 1
}

# For scripts that run a throw-away stack: makes a temporary folder `$work` (named after PREFIX),
# starts SecantusDB on a free port `$mongo_port` with its data there, and on exit stops every
# process whose pid is in `pids` and removes the folder.
scratch_stack() {
  work="$(mktemp -d "/tmp/$1.XXXXXX")"
  pids=()
  trap scratch_stack_cleanup EXIT
  mongo_port="$(free_port)"
  pids+=("$(start_secantus "$mongo_port" "$work/db")")
}

scratch_stack_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# Makes sure RabbitMQ answers on 127.0.0.1:5672, starting the local broker when it is installed.
ensure_rabbitmq() {
  port_open 127.0.0.1 5672 && return 0
  if command -v rabbitmq-server >/dev/null 2>&1; then
    log "starting RabbitMQ"
    rabbitmq-server -detached || true
    for _ in $(seq 1 120); do port_open 127.0.0.1 5672 && return 0; sleep 0.5; done
  fi
  echo "RabbitMQ is not reachable on 127.0.0.1:5672 (set AMQP_URL or start a broker)" >&2
  return 1
}

# True when a MongoDB-compatible server answers a `hello` command on HOST PORT (within 2 s).
# Unlike port_open, this tells a database apart from some other program holding the port.
mongo_ping() {
  python3 - "$1" "$2" <<'PY' 2>/dev/null
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
def cstr(s): return s.encode() + b"\0"
elems = b"\x10" + cstr("hello") + struct.pack("<i", 1)
elems += b"\x02" + cstr("$db") + struct.pack("<i", 6) + cstr("admin")
doc = struct.pack("<i", len(elems) + 5) + elems + b"\0"
body = struct.pack("<I", 0) + b"\0" + doc  # OP_MSG: flags, section kind 0, document
msg = struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body
with socket.create_connection((host, port), timeout=2) as s:
    s.settimeout(2)
    s.sendall(msg)
    head = s.recv(16, socket.MSG_WAITALL)
    length, _, response_to, opcode = struct.unpack("<iiii", head)
    rest = s.recv(length - 16, socket.MSG_WAITALL)
ok = response_to == 1 and opcode in (1, 2013) and b"\x01ok\x00" in rest
sys.exit(0 if ok else 1)
PY
}
