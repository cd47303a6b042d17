#!/usr/bin/env bash
# User-space instructions per request, memhub against Redis, counted by
# valgrind's callgrind: a figure the machine's load does not move, unlike
# ops/s (the kernel's share is not counted, for either server).
#
#   scripts/instructions.sh [--requests N] [--out DIR]
#
# Runs a release hub on one tokio worker under callgrind, loads it with
# `memhub bench --mode get` (50 clients, pipeline 16, 100-byte values), then
# does the same for redis-server with `redis-benchmark -t get -P 16`, and
# prints instructions per request for both and their ratio. The hub's
# figure includes its share of the bench's keyspace fill (10,000 updates in
# batches). The callgrind files stay in DIR for `callgrind_annotate`.
# Needs valgrind (installed from Debian when missing and running as root),
# redis-server and redis-benchmark. Takes about 2 minutes.
set -euo pipefail

requests=300000
out="${TMPDIR:-/tmp}/memhub-instructions"
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "instructions: unknown option $1" >&2; exit 2 ;;
    esac
done
out=$(realpath -m "$out")
cd "$(dirname "$0")/.."
mkdir -p "$out"

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "==> instructions: installing ${need[*]} from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "instructions: missing ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
        exit 2
    fi
fi
echo "==> instructions: cargo build --release --bin memhub"
cargo build --release --quiet --bin memhub
bin="${CARGO_TARGET_DIR:-target}/release/memhub"
hub_port=18877
redis_port=18878

pid=""
cleanup() { if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

# Waits for the callgrind summary line in $1 and prints the instruction count.
refs() {
    for _ in $(seq 300); do
        if grep -q "refs:" "$1"; then
            grep "refs:" "$1" | awk '{gsub(",", "", $NF); print $NF}'
            return 0
        fi
        sleep 0.2
    done
    echo "instructions: no callgrind summary in $1" >&2
    exit 1
}

wait_port() {
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "instructions: nothing listens on port $1" >&2
    exit 1
}

# --- memhub -------------------------------------------------------------------
echo "==> instructions: memhub under callgrind (one tokio worker)"
TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out/memhub.callgrind" \
    "$bin" serve --host 127.0.0.1 --port "$hub_port" >"$out/memhub.log" 2>&1 &
pid=$!
wait_port "$hub_port"
"$bin" bench --url "ws://127.0.0.1:$hub_port/ws" --mode get --clients 50 --pipeline 16 \
    --value-size 100 --requests "$requests" --json >"$out/memhub-bench.json"
answered=$(curl -s "http://127.0.0.1:$hub_port/metrics" |
    awk '/^memhub_requests_total/ {s += $2} END {printf "%d", s}')
kill -INT "$pid"
hub_ir=$(refs "$out/memhub.log")
wait "$pid" 2>/dev/null || true
pid=""

# --- Redis --------------------------------------------------------------------
echo "==> instructions: redis-server under callgrind"
valgrind --tool=callgrind --callgrind-out-file="$out/redis.callgrind" \
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.log" 2>&1 &
pid=$!
wait_port "$redis_port"
redis-benchmark -p "$redis_port" -t get -n "$requests" -d 100 -c 50 -P 16 -q >/dev/null
commands=$(redis-cli -p "$redis_port" info stats | tr -d '\r' | awk -F: '/^total_commands_processed:/ {print $2}')
redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
redis_ir=$(refs "$out/redis.log")
wait "$pid" 2>/dev/null || true
pid=""

awk -v hi="$hub_ir" -v hn="$answered" -v ri="$redis_ir" -v rn="$commands" 'BEGIN {
    h = hi / hn; r = ri / rn
    printf "| server | requests answered | instructions | per request |\n|---|---|---|---|\n"
    printf "| memhub (get, one worker) | %.0f | %.0f | %.0f |\n", hn, hi, h
    printf "| Redis (GET) | %.0f | %.0f | %.0f |\n", rn, ri, r
    printf "\nmemhub / Redis: %.2f instructions per request\n", h / r
}' | tee "$out/table.md"
echo "==> instructions: callgrind files in $out (callgrind_annotate --inclusive=yes FILE)"
