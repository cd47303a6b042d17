#!/usr/bin/env bash
# Runs a command against a fresh hub process and stops the hub afterwards.
#
#   scripts/with-hub.sh [--bin PATH] [--port N] [-- serve args ...] -- command args ...
#
# Starts `PATH serve --host 127.0.0.1 --port N <serve args>` (default binary
# target/release/memhub, default port 18872), waits until GET /healthz answers,
# then runs the command with MEMHUB_URL (ws://…/ws), MEMHUB_HTTP (http://…/),
# MEMHUB_PID (the hub's pid) and MEMHUB_BIN (the binary) exported. Exits with
# the command's status; prints the hub's log when the command failed.
set -euo pipefail

bin="${CARGO_TARGET_DIR:-target}/release/memhub"
port=18872
serve_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "with-hub: unknown option $1" >&2; exit 2 ;;
    esac
done
# A second `--` separates serve args from the command.
for ((i = 1; i <= $#; i++)); do
    if [ "${!i}" = "--" ]; then
        serve_args=("${@:1:i-1}")
        set -- "${@:i+1}"
        break
    fi
done
[ $# -gt 0 ] || { echo "with-hub: no command given" >&2; exit 2; }
[ -x "$bin" ] || { echo "with-hub: $bin is missing; build it first (cargo build --release)" >&2; exit 2; }

# Ready when GET /healthz answers 200 (curl if present, else bash's /dev/tcp).
healthy() {
    if command -v curl >/dev/null; then
        curl -fsS --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port" &&
            printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 &&
            timeout 1 head -n1 <&3 | grep -q ' 200 ') 2>/dev/null
    fi
}

# A hub already answering there would be tested instead of ours.
if healthy; then echo "with-hub: port $port is busy; stop what listens there" >&2; exit 1; fi
log=$(mktemp)
"$bin" serve --host 127.0.0.1 --port "$port" "${serve_args[@]}" 2>"$log" &
hub=$!
stop_hub() {
    local rc=$?
    kill "$hub" 2>/dev/null || true
    wait "$hub" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then echo "with-hub: failed ($rc); the hub's log:" >&2; cat "$log" >&2; fi
    rm -f "$log"
    exit "$rc"
}
trap stop_hub EXIT
for _ in $(seq 100); do
    kill -0 "$hub" 2>/dev/null || { echo "with-hub: the hub exited (is port $port busy?)" >&2; exit 1; }
    if healthy; then break; fi
    sleep 0.1
done
healthy || { echo "with-hub: the hub on port $port did not become ready" >&2; exit 1; }

export MEMHUB_URL="ws://127.0.0.1:$port/ws" MEMHUB_HTTP="http://127.0.0.1:$port/" MEMHUB_PID="$hub" MEMHUB_BIN="$bin"
"$@"
