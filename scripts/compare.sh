#!/usr/bin/env bash
# memhub vs Redis on this machine, side by side: the matrix of
# docs/performance.md. Prints a markdown table of ratios (median of --reps
# interleaved runs) and keeps every raw result under $OUT.
#
#   scripts/compare.sh [--reps N] [--seconds S] [--out DIR]
#
# Needs redis-server and redis-benchmark (installed from Debian when missing
# and running as root) and a release build of memhub (built here). Ports:
# hub 18874 (default tokio workers) and 18876 (one worker), Redis 18875.
# Takes about 9 minutes with the defaults.
#
# The request/response rows compare like with like, twice: the issue's
# redis-benchmark command reads and writes one key (no -r), so memhub bench
# runs with --keyspace 1 against it; and both sides spread over 10,000 keys
# (memhub bench's default keyspace, redis-benchmark -r 10000).
set -euo pipefail

reps=3
secs=5
out="${TMPDIR:-/tmp}/memhub-compare"
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps="$2"; shift 2 ;;
        --seconds) secs="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "compare: unknown option $1" >&2; exit 2 ;;
    esac
done
out=$(realpath -m "$out")
cd "$(dirname "$0")/.."
mkdir -p "$out"
rm -f "$out"/*.txt

hub_port=18874
redis_port=18875
# A second hub on one tokio worker thread, measured by a bench on one
# worker too (like redis-server and redis-benchmark, one thread each).
hub1_port=18876
bin="${CARGO_TARGET_DIR:-target}/release/memhub"
url="ws://127.0.0.1:$hub_port/ws"
url1="ws://127.0.0.1:$hub1_port/ws"

# --- prerequisites -----------------------------------------------------------
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null ||
    ! command -v redis-cli >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "==> compare: installing redis-server from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "compare: redis-server is missing; run as root or: sudo apt-get install -y redis-server" >&2
        exit 2
    fi
fi
echo "==> compare: cargo build --release --bin memhub"
cargo build --release --quiet --bin memhub
# 10,000 idle connections need more than 10,000 descriptors on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10100 ]; then
    echo "compare: ulimit -n is $(ulimit -n); the idle row needs 10,100" >&2
    exit 2
fi

# --- servers -----------------------------------------------------------------
hub_pid=""
hub1_pid=""
redis_pid=""
# Stops the server whose pid is in the variable named $1 (if running).
stop_server() {
    local pid="${!1}"
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    printf -v "$1" ''
}
stop_hub() { stop_server hub_pid; }
stop_hub1() { stop_server hub1_pid; }
stop_redis() { stop_server redis_pid; }
trap 'stop_hub; stop_hub1; stop_redis' EXIT

# Waits until port $1 accepts connections; else prints $2's log ($3) and fails.
wait_listening() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "compare: $2 did not start; its log:" >&2; cat "$3" >&2; exit 1
}

start_hub() {
    stop_hub
    "$bin" serve --host 127.0.0.1 --port "$hub_port" 2>"$out/hub.log" &
    hub_pid=$!
    wait_listening "$hub_port" "the hub" "$out/hub.log"
}
start_hub1() {
    stop_hub1
    TOKIO_WORKER_THREADS=1 "$bin" serve --host 127.0.0.1 --port "$hub1_port" 2>"$out/hub1.log" &
    hub1_pid=$!
    wait_listening "$hub1_port" "the one-worker hub" "$out/hub1.log"
}
start_redis() {
    stop_redis
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        --maxclients 20000 --logfile "$out/redis.log" &
    redis_pid=$!
    for _ in $(seq 100); do
        if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "compare: redis-server did not start; its log:" >&2; cat "$out/redis.log" >&2; exit 1
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
redis_rss_kib() { redis-cli -p "$redis_port" info memory | tr -d '\r' | awk -F: '/^used_memory_rss:/ {printf "%d", $2/1024}'; }

# --- measuring ---------------------------------------------------------------
# json FIELD: the first number after "FIELD": in the JSON line on stdin.
json() { grep -o "\"$1\":[0-9.e+-]*" | head -1 | cut -d: -f2; }
# record FILE VALUE: one sample per line.
record() { echo "$2" >>"$out/$1.txt"; }
memhub_bench() { MEMHUB_URL="$url" "$bin" bench --json --warmup 1 "$@"; }
# redis_csv TEST: rps and p99 (ms) of TEST from redis-benchmark --csv on stdin.
redis_csv() { tr -d '"' | awk -F, -v t="$1" '$1 == t {print $2, $7}'; }

# redis_rr P NAME [ARGS]: one redis-benchmark set,get run, recorded as NAME_get/NAME_set.
redis_rr() {
    local p=$1 name=$2 line rps p99
    shift 2
    echo "    redis-benchmark -t set,get -n 500000 -d 100 -c 50 -P $p $*"
    line=$(redis-benchmark -p "$redis_port" -t set,get -n 500000 -d 100 -c 50 -P "$p" "$@" --csv 2>/dev/null)
    read -r rps p99 <<<"$(redis_csv GET <<<"$line")"
    record "${name}_get_p$p" "$rps"; record "${name}_get_p${p}_p99" "$(awk -v v="$p99" 'BEGIN{print v*1000}')"
    read -r rps p99 <<<"$(redis_csv SET <<<"$line")"
    record "${name}_set_p$p" "$rps"; record "${name}_set_p${p}_p99" "$(awk -v v="$p99" 'BEGIN{print v*1000}')"
}
# memhub_rr P NAME [ARGS]: memhub bench get and update, recorded as NAME_get/NAME_update.
memhub_rr() {
    local p=$1 name=$2 mode line
    shift 2
    for mode in get update; do
        echo "    memhub bench --mode $mode --clients 50 --pipeline $p --value-size 100 --seconds $secs $*"
        line=$(memhub_bench --mode "$mode" --clients 50 --pipeline "$p" --value-size 100 --seconds "$secs" "$@")
        record "${name}_${mode}_p$p" "$(json ops_per_sec <<<"$line")"
        record "${name}_${mode}_p${p}_p99" "$(json p99 <<<"$line")"
    done
}

rr_round() {
    local p line
    for p in 1 16; do
        redis_rr "$p" redis
        memhub_rr "$p" memhub1key --keyspace 1
        redis_rr "$p" redis10k -r 10000
        memhub_rr "$p" memhub --keyspace 10000
        echo "    (one-worker hub and bench: TOKIO_WORKER_THREADS=1)"
        TOKIO_WORKER_THREADS=1 memhub_rr "$p" memhub1w --url "$url1" --keyspace 10000
    done
    echo "    memhub bench --mode redis-fanout --subscribers 1000 --pipeline 16 --seconds $secs"
    line=$(memhub_bench --url "redis://127.0.0.1:$redis_port" --mode redis-fanout --subscribers 1000 --pipeline 16 --seconds "$secs")
    record redis_fanout "$(json deliveries_per_sec <<<"$line")"
    record redis_fanout_missed "$(json missed_events <<<"$line")"
    echo "    memhub bench --mode fanout --subscribers 1000 --pipeline 16 --seconds $secs"
    line=$(memhub_bench --mode fanout --subscribers 1000 --pipeline 16 --seconds "$secs")
    record memhub_fanout "$(json deliveries_per_sec <<<"$line")"
    record memhub_fanout_missed "$(json missed_events <<<"$line")"
}

echo "==> compare: request/response and fan-out, $reps interleaved rounds (hub and Redis both running)"
start_hub
start_hub1
start_redis
for rep in $(seq "$reps"); do
    echo "  round $rep/$reps"
    rr_round
done
stop_hub1

echo "==> compare: 10,000 idle connections (fresh servers)"
start_hub
line=$(memhub_bench --mode idle --clients 10000 --pid "$hub_pid")
record memhub_idle "$(awk -v b="$(json bytes_per_connection <<<"$line")" 'BEGIN{printf "%.0f", b}')"
start_redis
before=$(redis_rss_kib)
redis-benchmark -p "$redis_port" -I -c 10000 >/dev/null 2>&1 &
idle_pid=$!
for _ in $(seq 300); do
    n=$(redis-cli -p "$redis_port" info clients | tr -d '\r' | awk -F: '/^connected_clients:/ {print $2}')
    [ "${n:-0}" -ge 10001 ] && break
    sleep 0.1
done
sleep 1
after=$(redis_rss_kib)
kill "$idle_pid" 2>/dev/null || true; wait "$idle_pid" 2>/dev/null || true
record redis_idle "$(( (after - before) * 1024 / 10000 ))"

echo "==> compare: 1,000,000 keys x 100-byte values (fresh servers), keys pages of 100"
start_hub
base=$(rss_kib "$hub_pid")
line=$(memhub_bench --mode keys --keyspace 1000000 --clients 1 --seconds "$secs")
record memhub_keys_p50 "$(json p50 <<<"$line")"
record memhub_keys_p99 "$(json p99 <<<"$line")"
record memhub_rss "$(rss_kib "$hub_pid")"
record memhub_rss_base "$base"
stop_hub
start_redis
rbase=$(redis_rss_kib)
pad=$(printf 'x%.0s' $(seq 100))
awk -v pad="$pad" 'BEGIN { for (i = 0; i < 1000000; i++) { k = "bench:" i; printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n", length(k), k, pad } }' |
    redis-cli -p "$redis_port" --pipe >/dev/null
record redis_rss "$(redis_rss_kib)"
record redis_rss_base "$rbase"
line=$(redis-benchmark -p "$redis_port" -n 5000 -c 1 --csv SCAN 0 MATCH 'bench:*' COUNT 100 2>/dev/null | tail -1 | tr -d '"')
record redis_scan_p50 "$(awk -F, '{print $5*1000}' <<<"$line")"
record redis_scan_p99 "$(awk -F, '{print $7*1000}' <<<"$line")"
stop_redis

# --- the table ---------------------------------------------------------------
med() { sort -g "$out/$1.txt" | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
# median of per-round ratios a/b
ratio() { paste "$out/$1.txt" "$out/$2.txt" | awk '{print $1/$2}' | sort -g | awk '{v[NR]=$1} END {printf "%.2f", (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
fmt() { awk -v v="$1" 'BEGIN{printf "%.0f", v}'; }
verdict() { if awk "BEGIN{exit !($1)}"; then echo met; else echo "NOT met"; fi; }

{
echo
echo "memhub vs Redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); medians of $reps rounds"
echo
echo "| workload | memhub | Redis | ratio | target | |"
echo "|---|---|---|---|---|---|"
# rr_row P MEMHUB REDIS M R LABEL: one request/response row of the table.
rr_row() {
    local p=$1 mh=$2 rd=$3 m=$4 r=$5 label=$6 rat mp99 rp99 ok tgt
    rat=$(ratio "${mh}_${m}_p$p" "${rd}_${r}_p$p")
    mp99=$(med "${mh}_${m}_p${p}_p99"); rp99=$(med "${rd}_${r}_p${p}_p99")
    if [ "$p" = 1 ]; then
        ok=$(verdict "$rat >= 1.0 && $mp99 <= 1000")
        tgt="≥ 1.0 × Redis, p99 ≤ 1 ms"
    else
        ok=$(verdict "$rat >= 0.7")
        tgt="≥ 0.7 × Redis"
    fi
    echo "| $label | $(fmt "$(med "${mh}_${m}_p$p")") ops/s, p99 $(fmt "$mp99") µs | $(fmt "$(med "${rd}_${r}_p$p")") ops/s, p99 $(fmt "$rp99") µs | $rat | $tgt | $ok |"
}
for p in 1 16; do
    for pair in "get get" "update set"; do
        read -r m r <<<"$pair"
        rr_row "$p" memhub1key redis "$m" "$r" "\`$m\` vs \`${r^^}\`, 50 clients, pipeline $p, one key (redis-benchmark's default)"
        rr_row "$p" memhub redis10k "$m" "$r" "same, 10,000 keys (\`--keyspace 10000\`, \`-r 10000\`)"
        rr_row "$p" memhub1w redis10k "$m" "$r" "same, 10,000 keys, hub and bench on 1 tokio worker each"
    done
done
rat=$(ratio memhub_fanout redis_fanout)
missed=$(sort -g "$out/memhub_fanout_missed.txt" | tail -1)
echo "| fan-out 1 → 1,000 subscribers, pipeline 16 | $(fmt "$(med memhub_fanout)") deliveries/s, missed $missed | $(fmt "$(med redis_fanout)") deliveries/s, missed $(sort -g "$out/redis_fanout_missed.txt" | tail -1) | $rat | ≥ 1.0 × Redis, none missed | $(verdict "$rat >= 1.0 && $missed == 0") |"
mi=$(med memhub_idle); ri=$(med redis_idle)
echo "| 10,000 idle connections, RSS each | $(awk -v v="$mi" 'BEGIN{printf "%.1f", v/1024}') KiB | $(awk -v v="$ri" 'BEGIN{printf "%.1f", v/1024}') KiB | $(awk -v a="$mi" -v b="$ri" 'BEGIN{printf "%.2f", (b>0)?a/b:0}') | ≤ 16 KiB | $(verdict "$mi <= 16384") |"
mr=$(med memhub_rss); rr=$(med redis_rss)
echo "| 1,000,000 keys × 100 B, RSS | $(awk -v v="$mr" 'BEGIN{printf "%.1f", v/1024}') MiB | $(awk -v v="$rr" 'BEGIN{printf "%.1f", v/1024}') MiB used_memory_rss | $(awk -v a="$mr" -v b="$rr" 'BEGIN{printf "%.2f", a/b}') | ≤ 1.5 × Redis | $(verdict "$mr <= 1.5 * $rr") |"
kp99=$(med memhub_keys_p99)
echo "| \`keys\` page of 100 of 1,000,000 (Redis: SCAN COUNT 100) | p50 $(med memhub_keys_p50) µs, p99 $kp99 µs | p50 $(med redis_scan_p50) µs, p99 $(med redis_scan_p99) µs | | ≤ 5 ms | $(verdict "$kp99 <= 5000") |"
echo
echo "raw samples: $out/*.txt"
} | tee "$out/table.md"
