#!/usr/bin/env bash
# Publisher-confirm latency of two ringmq builds, alternating, one fresh broker per run
# (issue 11's confirm target): persistent 1 KB messages, open loop at CONFIRM_RATE, and the
# confirmed rate with a window of CONFIRM_WINDOW; `ringmq-perf disk-floor` on the same device
# before each round. Prints one line per run (TSV) on stdout; logs go to WORK.
#
#   perf/confirm_ab.sh DIR_A DIR_B          # each DIR holds a ringmq and a ringmq-perf binary
#
# ROUNDS (5), DURATION (6 s per run, the first WARMUP s left out), CONFIRM_RATE (2000),
# CONFIRM_WINDOW (1000), SHARDS (empty: the default), FLOOR_WRITES (3000), EXTRA_ARGS
# (more ringmq arguments, e.g. --trace-latency), WORK (a fresh temporary directory).
set -euo pipefail

A=${1:?usage: confirm_ab.sh DIR_A DIR_B}
B=${2:?usage: confirm_ab.sh DIR_A DIR_B}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
CONFIRM_RATE=${CONFIRM_RATE:-2000}
CONFIRM_WINDOW=${CONFIRM_WINDOW:-1000}
FLOOR_WRITES=${FLOOR_WRITES:-3000}
PORT=${PORT:-5741}
STARTUP_TIMEOUT_SECONDS=30
WORK=${WORK:-$(mktemp -d /tmp/ringmq-confirm-ab.XXXXXX)}
mkdir -p "$WORK"
SHARDS_ARGS=()
if [ -n "${SHARDS:-}" ]; then SHARDS_ARGS=(--shards "$SHARDS"); fi
read -r -a EXTRA <<<"${EXTRA_ARGS:-}"
URL="amqp://guest:guest@127.0.0.1:$PORT/%2f"
PID=""

stop_broker() {
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    PID=""
}
trap stop_broker EXIT

start_broker() { # bin dir, log prefix
    rm -rf "$WORK/data"
    mkdir -p "$WORK/data"
    "$1/ringmq" --port "$PORT" "${SHARDS_ARGS[@]}" "${EXTRA[@]}" --data-dir "$WORK/data" \
        --listen 127.0.0.1 --management-port 0 --prometheus-port 0 --log-level info \
        >"$2.out" 2>"$2.err" &
    PID=$!
    local i
    for ((i = 0; i < STARTUP_TIMEOUT_SECONDS * 100; i++)); do
        grep -q "ringmq ready" "$2.out" 2>/dev/null && return 0
        kill -0 "$PID" 2>/dev/null || { echo "ringmq exited" >&2; tail "$2.err" >&2; return 1; }
        sleep 0.01
    done
    echo "ringmq not ready" >&2
    return 1
}

metric() { # file, name: the value with thousands separators dropped
    awk -v n="$2" '$1 == n { gsub(",", "", $2); print $2 }' "$1"
}

echo -e "round\tbuild\tload1\tfloor_p99\tconf_p50\tconf_p99\tconf_p99_9\tconf_max\tratio\tmax_rate_confirmed_per_s"
for ((round = 1; round <= ROUNDS; round++)); do
    "$A/ringmq-perf" disk-floor --dir "$WORK" --writes "$FLOOR_WRITES" >"$WORK/floor-$round.txt"
    floor=$(metric "$WORK/floor-$round.txt" disk_latency_us_p99)
    for side in A B; do
        dir=$A
        if [ "$side" = B ]; then dir=$B; fi
        log="$WORK/$side-$round"
        load=$(cut -d' ' -f1 /proc/loadavg)
        start_broker "$dir" "$log"
        "$dir/ringmq-perf" confirm --url "$URL" --duration "$DURATION" --warmup "$WARMUP" \
            --size 1024 --persistent --prefetch 1000 --multiple-ack 100 \
            --disk-floor-us-p99 "$floor" --rate "$CONFIRM_RATE" --producers 1 --consumers 1 \
            --pid "$PID" >"$log-rate.txt" 2>"$log-rate.err"
        "$dir/ringmq-perf" confirm --url "$URL" --duration "$DURATION" --warmup "$WARMUP" \
            --size 1024 --persistent --prefetch 1000 --multiple-ack 100 \
            --max-rate --confirm "$CONFIRM_WINDOW" --producers 1 --consumers 1 \
            --pid "$PID" >"$log-max.txt" 2>"$log-max.err"
        stop_broker
        r="$log-rate.txt"
        echo -e "$round\t$side\t$load\t$floor\t$(metric "$r" confirm_latency_us_p50)\t$(metric "$r" confirm_latency_us_p99)\t$(metric "$r" confirm_latency_us_p99_9)\t$(metric "$r" confirm_latency_us_max)\t$(metric "$r" confirm_p99_over_disk_p99)\t$(metric "$log-max.txt" confirmed_msgs_per_s)"
    done
done
echo "logs in $WORK" >&2
