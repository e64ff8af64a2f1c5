#!/usr/bin/env bash
# The soak (issue 12): DURATION seconds (default 1800) of mixed load from `ringmq-perf soak`
# against a ringmq started here on a fresh data directory, with a kill -9 and a restart every
# RESTART_EVERY seconds (default 300). ringmq-perf checks that every confirmed persistent
# message arrives at every durable queue it was routed to (after the last restart, in a drain),
# prints a line per minute (broker RSS, open fds, p99) and writes the samples and a PNG.
# Runs outside CI. Writes perf/results/<date>-soak.{md,json,png}.
#
# Knobs: DURATION, RESTART_EVERY, RATE (msg/s, default 1000), SIZE (bytes, 1024), SHARDS (2),
# PORT (5699), NO_BUILD=1 to use the binaries in target/release as they are.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-1800}
RESTART_EVERY=${RESTART_EVERY:-300}
RATE=${RATE:-1000}
SIZE=${SIZE:-1024}
SHARDS=${SHARDS:-2}
PORT=${PORT:-5699}
READY_TIMEOUT_S=30

if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release --bin ringmq --bin ringmq-perf
fi
stamp=$(date -u +%Y-%m-%d-%H%M)
out=perf/results/$stamp-soak
work=$(mktemp -d /tmp/ringmq-soak.XXXXXX)
broker_pid=""
perf_pid=""
cleanup() {
    [[ -n "$perf_pid" ]] && kill "$perf_pid" 2>/dev/null || true
    [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_broker() {
    : >"$work/ready"
    target/release/ringmq --port "$PORT" --shards "$SHARDS" --data-dir "$work/data" \
        --listen 127.0.0.1 --management-port 0 --prometheus-port 0 \
        >>"$work/ready" 2>>"$work/broker.log" &
    broker_pid=$!
    echo "$broker_pid" >"$work/broker.pid"
    local waited=0
    until grep -q "ringmq ready" "$work/ready"; do
        if ((waited >= READY_TIMEOUT_S * 10)) || ! kill -0 "$broker_pid" 2>/dev/null; then
            echo "soak: ringmq did not become ready" >&2
            tail -20 "$work/broker.log" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

mkdir -p "$work/data"
start_broker
started=$(date +%s)
target/release/ringmq-perf soak --url "amqp://guest:guest@127.0.0.1:$PORT/%2f" \
    --duration "$DURATION" --rate "$RATE" --size "$SIZE" --pid-file "$work/broker.pid" \
    --series "$out.json" --png "$out.png" | tee "$work/soak.txt" &
perf_pid=$!

restarts=0
next=$((started + RESTART_EVERY))
while kill -0 "$perf_pid" 2>/dev/null && ((next < started + DURATION)); do
    now=$(date +%s)
    if ((now < next)); then
        sleep 1
        continue
    fi
    kill -9 "$broker_pid"
    wait "$broker_pid" 2>/dev/null || true
    restarts=$((restarts + 1))
    echo "soak: kill -9 and restart $restarts at $((now - started)) s"
    start_broker
    next=$((next + RESTART_EVERY))
done
status=0
wait "$perf_pid" || status=$?
perf_pid=""
kill -TERM "$broker_pid" 2>/dev/null || true
wait "$broker_pid" 2>/dev/null || true
broker_pid=""

{
    echo "# Soak $stamp"
    echo
    echo "\`DURATION=$DURATION RESTART_EVERY=$RESTART_EVERY RATE=$RATE SIZE=$SIZE SHARDS=$SHARDS perf/soak.sh\`"
    echo "on $(nproc) cores shared with other work ($(uname -r)); kill -9 + restart: $restarts;"
    echo "ringmq-perf exit status $status (non-zero: confirmed messages missing, or an error)."
    echo
    echo '```'
    cat "$work/soak.txt"
    echo '```'
    echo
    echo "Broker log warnings and errors (first 20):"
    echo
    echo '```'
    grep -E " (WARN|ERROR) " "$work/broker.log" | head -20 || true
    echo '```'
    echo
    echo "![RSS and p99 over time]($(basename "$out").png)"
} >"$out.md"
echo "soak: wrote $out.md"
exit "$status"
