#!/usr/bin/env bash
# ringmq vs RabbitMQ on this machine, same run, alternating runs (issue 4's matrix).
# Installs RabbitMQ from Debian when missing, starts both brokers on private ports and dirs,
# runs ringmq-perf compare for each scenario, writes perf/results/<date>.md (+ latency plot),
# and stops everything it started.
#
# Knobs (environment): RUNS (3), DURATION seconds per run (5), RINGMQ_PORT (5680),
# RABBIT_PORT (5682), SHARDS (2), BACKLOG_MESSAGES (1000000), BACKLOG_RUNS (1), CARGO_TARGET_DIR,
# CASES (a subset of: transient durable fanout topic latency connections backlog).
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
RINGMQ_PORT=${RINGMQ_PORT:-5680}
RABBIT_PORT=${RABBIT_PORT:-5682}
SHARDS=${SHARDS:-2}
BACKLOG_MESSAGES=${BACKLOG_MESSAGES:-1000000}
# Bounded waits: brokers must be up within this many seconds.
STARTUP_TIMEOUT_SECONDS=120

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
STAMP=$(date -u +%Y-%m-%d-%H%M)
RESULTS_DIR=$ROOT/perf/results
REPORT=$RESULTS_DIR/$STAMP.md
PLOT=$RESULTS_DIR/$STAMP-latency.png
WORK=$(mktemp -d /tmp/ringmq-compare.XXXXXX)
RABBIT_NODE=perf@localhost
RINGMQ_PID=""
RABBIT_PID=""

log() { echo "compare.sh: $*" >&2; }

cleanup() {
    set +e
    if [ -n "$RINGMQ_PID" ]; then kill "$RINGMQ_PID" 2>/dev/null; wait "$RINGMQ_PID" 2>/dev/null; fi
    if [ -n "$RABBIT_PID" ]; then
        rabbitmqctl -n "$RABBIT_NODE" stop >/dev/null 2>&1
        # rabbitmq-server runs in its own session (setsid): end that group only.
        kill -- -"$RABBIT_PID" 2>/dev/null
        wait "$RABBIT_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_port() { # host port seconds pid
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        kill -0 "$4" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---- prerequisites -------------------------------------------------------------------------
need_apt=()
command -v rabbitmq-server >/dev/null || need_apt+=(rabbitmq-server)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Debian's package starts a node through its service scripts where it can; we want only ours.
if command -v service >/dev/null; then service rabbitmq-server stop >/dev/null 2>&1 || true; fi

log "building ringmq and ringmq-perf (release)"
cargo build --release --bin ringmq --bin ringmq-perf >&2

# ---- RabbitMQ ------------------------------------------------------------------------------
mkdir -p "$WORK/rabbit/mnesia" "$WORK/rabbit/log"
echo "[]." >"$WORK/rabbit/enabled_plugins"
# Debian's rabbitmq-server re-executes itself as the rabbitmq user when started by root.
chmod 755 "$WORK"
if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq: "$WORK/rabbit"; fi
log "starting RabbitMQ on $RABBIT_PORT"
RABBITMQ_NODE_PORT=$RABBIT_PORT \
RABBITMQ_DIST_PORT=$((RABBIT_PORT + 20000)) \
RABBITMQ_NODENAME=$RABBIT_NODE \
RABBITMQ_MNESIA_BASE=$WORK/rabbit/mnesia \
RABBITMQ_LOG_BASE=$WORK/rabbit/log \
RABBITMQ_ENABLED_PLUGINS_FILE=$WORK/rabbit/enabled_plugins \
    setsid rabbitmq-server >"$WORK/rabbit/stdout" 2>&1 &
RABBIT_PID=$!
if ! wait_port 127.0.0.1 "$RABBIT_PORT" "$STARTUP_TIMEOUT_SECONDS" "$RABBIT_PID"; then
    log "RabbitMQ did not open port $RABBIT_PORT"; tail -20 "$WORK/rabbit/stdout" >&2; exit 1
fi
timeout "$STARTUP_TIMEOUT_SECONDS" rabbitmqctl -n "$RABBIT_NODE" await_startup >/dev/null
RABBIT_BEAM_PID=$(rabbitmqctl -n "$RABBIT_NODE" eval 'os:getpid().' | tr -dc '0-9')
RABBIT_VERSION=$(rabbitmqctl -n "$RABBIT_NODE" version 2>/dev/null || echo unknown)

# ---- ringmq --------------------------------------------------------------------------------
log "starting ringmq on $RINGMQ_PORT with $SHARDS shards"
mkdir -p "$WORK/ringmq-data"
"$BIN/ringmq" --port "$RINGMQ_PORT" --shards "$SHARDS" --data-dir "$WORK/ringmq-data" \
    --log-level warn >"$WORK/ringmq.out" 2>"$WORK/ringmq.err" &
RINGMQ_PID=$!
for ((i = 0; i < STARTUP_TIMEOUT_SECONDS * 10; i++)); do
    grep -q "ringmq ready" "$WORK/ringmq.out" 2>/dev/null && break
    kill -0 "$RINGMQ_PID" 2>/dev/null || { log "ringmq exited"; cat "$WORK/ringmq.err" >&2; exit 1; }
    sleep 0.1
done
grep -q "ringmq ready" "$WORK/ringmq.out" || { log "ringmq not ready"; exit 1; }

RINGMQ_URL="amqp://guest:guest@127.0.0.1:$RINGMQ_PORT/%2f"
RABBIT_URL="amqp://guest:guest@127.0.0.1:$RABBIT_PORT/%2f"
PERF="$BIN/ringmq-perf"
compare_args() { # runs
    COMPARE=(compare --a "$RINGMQ_URL" --b "$RABBIT_URL" --a-label ringmq --b-label rabbitmq
        --a-pid "$RINGMQ_PID" --b-pid "$RABBIT_BEAM_PID" --runs "$1")
}
compare_args "$RUNS"

# ---- the report ----------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
{
    echo "# ringmq vs RabbitMQ — $STAMP"
    echo
    echo "Generated by \`perf/compare.sh\` (RUNS=$RUNS, DURATION=${DURATION}s per run)."
    echo "Medians of $RUNS alternating runs (ringmq, rabbitmq, ringmq, ...); ratio = ringmq/rabbitmq."
    echo
    echo "## Machine"
    echo
    echo "- nproc: $(nproc)"
    echo "- cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "- kernel: $(uname -r)"
    echo "- memory: $(grep MemTotal /proc/meminfo | awk '{print $2/1024/1024 " GiB"}')"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- ringmq: $(git rev-parse --short HEAD 2>/dev/null || echo '?') --shards $SHARDS"
    echo "- RabbitMQ: $RABBIT_VERSION (Debian package, default config, classic queues)"
    echo
    echo "Latency percentiles are in µs. In the throughput-style scenarios producers stop while"
    echo "more than --max-backlog (100,000) messages are in flight, so their latency columns measure"
    echo "a full backlog (closed loop), not responsiveness; the latency scenario is open loop."
    echo
} >"$REPORT"

run_case() { # title, then ringmq-perf scenario args
    local title=$1; shift
    log "case: $title"
    local cmd=("$PERF" "${COMPARE[@]}" "${SAVE[@]}" "$@")
    {
        echo "## $title"
        echo
        echo '```'
        echo "ringmq-perf ${COMPARE[0]} --a ringmq --b rabbitmq ${COMPARE[*]: -2} $*"
        echo '```'
        echo
    } >>"$REPORT"
    if ! "${cmd[@]}" >>"$REPORT" 2>"$WORK/last.err"; then
        echo "FAILED: $(tail -3 "$WORK/last.err")" >>"$REPORT"
    fi
    echo >>"$REPORT"
}

# CASES (environment) picks groups of cases: transient durable fanout topic latency connections
# backlog; empty runs them all.
wanted() { [[ -z ${CASES:-} || " $CASES " == *" $1 "* ]]; }

SAVE=()
D=(--duration "$DURATION")
ACK=(--prefetch 1000 --multiple-ack 100)
if wanted transient; then
    run_case "16 B transient, 1 producer → 1 consumer" throughput "${D[@]}" --size 16 "${ACK[@]}"
    run_case "1 KB transient, 1 → 1" throughput "${D[@]}" --size 1024 "${ACK[@]}"
fi
if wanted durable; then
    # Durable queue, delivery_mode 2, confirms: every message is in the write-ahead log (fdatasync)
    # before its confirm; RabbitMQ: durable classic queue.
    run_case "16 B persistent, confirms (window 1000), 1 → 1" \
        throughput "${D[@]}" --size 16 --persistent --confirm 1000 "${ACK[@]}"
    run_case "1 KB persistent, confirms (window 1000), 1 publisher → 1 consumer" \
        throughput "${D[@]}" --size 1024 --persistent --confirm 1000 "${ACK[@]}"
    run_case "1 KB persistent, confirms (window 1000), 4 publishers → 4 consumers" \
        throughput "${D[@]}" --size 1024 --persistent --confirm 1000 --producers 4 --consumers 4 "${ACK[@]}"
fi
wanted fanout && run_case "Fanout to 10 queues, 16 B" fanout "${D[@]}" --queues 10 --size 16 "${ACK[@]}"
wanted topic && run_case "Topic exchange, 10,000 bindings, 16 B" topic "${D[@]}" --bindings 10000 --size 16 "${ACK[@]}"
if wanted latency; then
    SAVE=(--save "$WORK/latency.json")
    run_case "Latency, open loop, 16 B (10k and 100k msg/s)" \
        latency --duration $((DURATION + 1)) --warmup 1 --sweep 10000,100000 --size 16 "${ACK[@]}"
    SAVE=()
fi
wanted connections && run_case "100 connections × 100 queues, 100 msg/s each" \
    connections "${D[@]}" --connections 100 --queues 100 --rate 100 --size 16
# One run: RabbitMQ takes minutes per million here, and memory is not a rate to take medians of.
# Confirms make "published" mean "the broker has it": without them a broker that stops reading
# (memory alarm) leaves messages in our socket buffer that the close then discards.
if wanted backlog; then
    compare_args "${BACKLOG_RUNS:-1}"
    run_case "Backlog: $BACKLOG_MESSAGES × 16 B queued (confirmed), then drained (RSS from /proc/PID/status)" \
        backlog --messages "$BACKLOG_MESSAGES" --size 16 --confirm 10000 "${ACK[@]}"
    compare_args "$RUNS"
fi

log "case: pingpong floor"
{
    echo "## Loopback TCP ping-pong floor (same schedule and stamps as the latency scenario)"
    echo
    echo '```'
    echo "ringmq-perf pingpong --duration $((DURATION + 1)) --warmup 1 --sweep 10000,100000"
    echo
    "$PERF" pingpong --duration $((DURATION + 1)) --warmup 1 --sweep 10000,100000 2>/dev/null ||
        echo "FAILED"
    echo '```' 
} >>"$REPORT"

if [ -f "$WORK/latency.json" ] &&
    "$PERF" plot --input "$WORK/latency.json" --out "$PLOT" \
        --title "open-loop latency, 16 B, ringmq vs RabbitMQ ($STAMP)" 2>>"$WORK/last.err"; then
    echo "![latency vs rate]($(basename "$PLOT"))" >>"$REPORT"
else
    echo "(no plot: $(tail -1 "$WORK/last.err"))" >>"$REPORT"
fi
echo >>"$REPORT"
echo "Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$REPORT"
log "wrote $REPORT"
