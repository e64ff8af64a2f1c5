#!/usr/bin/env bash
# The management API polled vs not (issue 10's acceptance): the 16 B maximum publish rate
# (throughput, 1 producer, 1 consumer) and the p99 at an open-loop 10,000 msg/s (latency), on
# one ringmq, each as `ringmq-perf compare` of the same broker with alternating runs (not
# polled, polled, ...), medians of RUNS; polled = POLLERS clients each asking GET POLL_PATH
# every POLL_INTERVAL_MS on their own keep-alive connection. Writes
# perf/results/<date>-api-polled.md; stops what it started.
#
# Knobs: RUNS (3), DURATION seconds per run (10), RATE (10000), SIZE (16), SHARDS (ringmq's default),
# PORT (5699), MANAGEMENT_PORT (15699), POLLERS (10), POLL_INTERVAL_MS (1000),
# POLL_PATH (/api/queues), NO_BUILD=1.
set -euo pipefail
# shellcheck source=lib/ringmq.sh
source "$(dirname "$0")/lib/ringmq.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-10000}
SIZE=${SIZE:-16}
# Empty: ringmq's own default shard count (the default configuration is what issue 10 measures).
SHARDS=${SHARDS:-}
SHARDS_ARGS=()
[[ -n "$SHARDS" ]] && SHARDS_ARGS=(--shards "$SHARDS")
PORT=${PORT:-5699}
MANAGEMENT_PORT=${MANAGEMENT_PORT:-15699}
POLLERS=${POLLERS:-10}
POLL_INTERVAL_MS=${POLL_INTERVAL_MS:-1000}
POLL_PATH=${POLL_PATH:-/api/queues}
READY_TIMEOUT_S=30

if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release --bin ringmq --bin ringmq-perf
fi
stamp=$(date -u +%Y-%m-%d-%H%M)
out=perf/results/$stamp-api-polled.md
work=$(mktemp -d /tmp/ringmq-api-polled.XXXXXX)
broker_pid=""
cleanup() {
    [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_ringmq api_polled "$work" "$READY_TIMEOUT_S" --port "$PORT" "${SHARDS_ARGS[@]}" --data-dir "$work/data" \
    --listen 127.0.0.1 --management-port "$MANAGEMENT_PORT" --prometheus-port 0

amqp="amqp://guest:guest@127.0.0.1:$PORT/%2f"
api="http://guest:guest@127.0.0.1:$MANAGEMENT_PORT$POLL_PATH"
compare=(target/release/ringmq-perf compare --a "$amqp" --b "$amqp" --a-label unpolled
    --b-label polled --b-poll-api "$api" --a-pid "$broker_pid" --b-pid "$broker_pid"
    --runs "$RUNS")
polling=(--pollers "$POLLERS" --poll-interval-ms "$POLL_INTERVAL_MS")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "# Management API polled vs not, $stamp"
    echo
    echo "One ringmq (${SHARDS:-the default number of} shards, management API on $MANAGEMENT_PORT), ringmq-perf and the"
    echo "pollers on the same $(nproc)-core machine ($(uname -r)), shared with other engineers'"
    echo "builds and tests: load average $load_before (1, 5, 15 min) before the runs."
    echo "Polled: $POLLERS clients, each GET $POLL_PATH every $POLL_INTERVAL_MS ms (own keep-alive"
    echo "connection, staggered). Alternating runs of $DURATION s (unpolled, polled, ...), medians"
    echo "of $RUNS, $SIZE-byte transient bodies, same broker process throughout."
    echo "\`perf/api_polled.sh\` (RUNS=$RUNS DURATION=$DURATION RATE=$RATE SIZE=$SIZE SHARDS=$SHARDS)."
    echo
    echo "## Maximum rate (throughput, 1 producer, 1 consumer)"
    echo
    echo '```'
    echo "${compare[*]} throughput --duration $DURATION --size $SIZE ${polling[*]}"
    echo '```'
    echo
    "${compare[@]}" throughput --duration "$DURATION" --size "$SIZE" "${polling[@]}"
    echo
    echo "## Latency at an open-loop $RATE msg/s"
    echo
    echo '```'
    echo "${compare[*]} latency --duration $DURATION --warmup 2 --size $SIZE --rate $RATE ${polling[*]}"
    echo '```'
    echo
    "${compare[@]}" latency --duration "$DURATION" --warmup 2 --size "$SIZE" --rate "$RATE" \
        "${polling[@]}"
    echo
    echo "Load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)."
} | tee "$out"
echo "api_polled: wrote $out"
