#!/usr/bin/env bash
# ringmq vs RabbitMQ on this machine, same run, alternating runs (issue 4's matrix).
# Installs RabbitMQ from Debian when missing, starts both brokers on private ports and dirs,
# runs ringmq-perf compare for each scenario, writes perf/results/<date>.md (+ latency plot),
# and stops everything it started.
#
# Knobs (environment): RUNS (3), DURATION seconds per run (5), RINGMQ_PORT (5680),
# RABBIT_PORT (5682), SHARDS (empty: ringmq's default), BACKLOG_MESSAGES (1000000), BACKLOG_RUNS (1), CARGO_TARGET_DIR,
# CASES (a subset of: transient durable fanout topic latency connections idle queues backlog; `durable` is
# the union of durable-throughput floor confirm recovery, which may also be named alone),
# CONFIRM_RATE (2000 msg/s), SWEEP (latency rates: 1000,10000,50000,100000), CONFIRM_WINDOW (1000), FLOOR_WRITES (5000),
# RECOVERY_MESSAGES (200000), IDLE_CONNECTIONS (10000), DECLARE_QUEUES (100000), SCALE_RUNS (RUNS).
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
RINGMQ_PORT=${RINGMQ_PORT:-5680}
RABBIT_PORT=${RABBIT_PORT:-5682}
# Empty: ringmq's own default shard count (the default configuration is what the issue measures).
SHARDS=${SHARDS:-}
SHARDS_ARGS=()
[[ -n "$SHARDS" ]] && SHARDS_ARGS=(--shards "$SHARDS")
BACKLOG_MESSAGES=${BACKLOG_MESSAGES:-1000000}
CONFIRM_RATE=${CONFIRM_RATE:-2000}
# The open-loop latency rates (msg/s), for ringmq, RabbitMQ and the ping-pong floor alike.
SWEEP=${SWEEP:-1000,10000,50000,100000}
CONFIRM_WINDOW=${CONFIRM_WINDOW:-1000}
FLOOR_WRITES=${FLOOR_WRITES:-5000}
RECOVERY_MESSAGES=${RECOVERY_MESSAGES:-200000}
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
# RabbitMQ sizes its socket limit from the open-files limit it starts with, and Debian's
# wrapper starts it through su, which drops the soft limit to 1024 (about 830 connections).
# RabbitMQ's production checklist asks for at least 50,000; give it the hard limit we have, so
# the idle-connections case compares brokers and not limits.
RABBIT_NOFILE=$(ulimit -Hn)
if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
    RABBIT_LAUNCH=(su rabbitmq -s /bin/sh -c "ulimit -n $RABBIT_NOFILE && exec /usr/lib/rabbitmq/bin/rabbitmq-server")
else
    RABBIT_LAUNCH=(rabbitmq-server)
fi
log "starting RabbitMQ on $RABBIT_PORT"
RABBITMQ_NODE_PORT=$RABBIT_PORT \
RABBITMQ_DIST_PORT=$((RABBIT_PORT + 20000)) \
RABBITMQ_NODENAME=$RABBIT_NODE \
RABBITMQ_MNESIA_BASE=$WORK/rabbit/mnesia \
RABBITMQ_LOG_BASE=$WORK/rabbit/log \
RABBITMQ_ENABLED_PLUGINS_FILE=$WORK/rabbit/enabled_plugins \
    setsid "${RABBIT_LAUNCH[@]}" >"$WORK/rabbit/stdout" 2>&1 &
RABBIT_PID=$!
if ! wait_port 127.0.0.1 "$RABBIT_PORT" "$STARTUP_TIMEOUT_SECONDS" "$RABBIT_PID"; then
    log "RabbitMQ did not open port $RABBIT_PORT"; tail -20 "$WORK/rabbit/stdout" >&2; exit 1
fi
timeout "$STARTUP_TIMEOUT_SECONDS" rabbitmqctl -n "$RABBIT_NODE" await_startup >/dev/null
RABBIT_BEAM_PID=$(rabbitmqctl -n "$RABBIT_NODE" eval 'os:getpid().' | tr -dc '0-9')
RABBIT_VERSION=$(rabbitmqctl -n "$RABBIT_NODE" version 2>/dev/null || echo unknown)

# ---- ringmq --------------------------------------------------------------------------------
start_ringmq() { # data dir, log level, output path prefix; sets RINGMQ_PID
    "$BIN/ringmq" --port "$RINGMQ_PORT" "${SHARDS_ARGS[@]}" --data-dir "$1" \
        --log-level "$2" >"$3.out" 2>"$3.err" &
    RINGMQ_PID=$!
    local i
    for ((i = 0; i < STARTUP_TIMEOUT_SECONDS * 100; i++)); do
        grep -q "ringmq ready" "$3.out" 2>/dev/null && return 0
        kill -0 "$RINGMQ_PID" 2>/dev/null || { log "ringmq exited"; cat "$3.err" >&2; return 1; }
        sleep 0.01
    done
    log "ringmq not ready"
    return 1
}
stop_ringmq() { # signal
    # wait reports the signal as a failure; under set -e that must not end the script.
    if [ -n "$RINGMQ_PID" ]; then
        kill "-$1" "$RINGMQ_PID" 2>/dev/null || true
        wait "$RINGMQ_PID" 2>/dev/null || true
    fi
    RINGMQ_PID=""
}

log "starting ringmq on $RINGMQ_PORT with ${SHARDS:-the default} shards"
mkdir -p "$WORK/ringmq-data"
start_ringmq "$WORK/ringmq-data" warn "$WORK/ringmq" || exit 1

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
    echo "- ringmq: $(git rev-parse --short HEAD 2>/dev/null || echo '?') --shards ${SHARDS:-default}"
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
# idle queues backlog; empty runs them all.
wanted() { [[ -z ${CASES:-} || " $CASES " == *" $1 "* ]]; }
# The durable groups also run when `durable` is asked for.
wanted_durable() { wanted durable || wanted "$1"; }

SAVE=()
D=(--duration "$DURATION")
ACK=(--prefetch 1000 --multiple-ack 100)
if wanted transient; then
    run_case "16 B transient, 1 producer → 1 consumer" throughput "${D[@]}" --size 16 "${ACK[@]}"
    run_case "1 KB transient, 1 → 1" throughput "${D[@]}" --size 1024 "${ACK[@]}"
fi
if wanted_durable durable-throughput; then
    # Durable queue, delivery_mode 2, confirms: every message is in the write-ahead log (fdatasync)
    # before its confirm; RabbitMQ: durable classic queue.
    run_case "16 B persistent, confirms (window 1000), 1 → 1" \
        throughput "${D[@]}" --size 16 --persistent --confirm 1000 "${ACK[@]}"
    run_case "1 KB persistent, confirms (window 1000), 1 publisher → 1 consumer" \
        throughput "${D[@]}" --size 1024 --persistent --confirm 1000 "${ACK[@]}"
    run_case "1 KB persistent, confirms (window 1000), 4 publishers → 4 consumers" \
        throughput "${D[@]}" --size 1024 --persistent --confirm 1000 --producers 4 --consumers 4 "${ACK[@]}"
fi
FLOOR_P99=""
if wanted_durable floor || wanted_durable confirm; then
    # Both brokers keep their data under $WORK: the floor is measured on that same device,
    # while both are idle.
    log "case: disk floor"
    FLOOR_ARGS=(disk-floor --dir "$WORK" --writes "$FLOOR_WRITES")
    {
        echo "## Device floor: 4 KiB O_DIRECT write + fdatasync"
        echo
        echo "On $(df --output=source,fstype "$WORK" | tail -1 | tr -s ' '), where both brokers keep their data."
        echo
        echo '```'
        echo "ringmq-perf ${FLOOR_ARGS[*]}"
        echo
    } >>"$REPORT"
    if "$PERF" "${FLOOR_ARGS[@]}" >"$WORK/floor.txt" 2>"$WORK/last.err"; then
        cat "$WORK/floor.txt" >>"$REPORT"
        FLOOR_P99=$(awk '$1 == "disk_latency_us_p99" { gsub(",", "", $2); print $2 }' "$WORK/floor.txt")
    else
        echo "FAILED: $(tail -3 "$WORK/last.err")" >>"$REPORT"
    fi
    printf '```\n\n' >>"$REPORT"
fi
if wanted_durable confirm; then
    # Publisher-confirm latency at the publisher: persistent 1 KB messages, durable queue
    # (RabbitMQ: durable classic queue), consumers draining. Open loop: from each message's
    # intended send time; max rate: a window of unconfirmed messages, from the actual send time.
    FLOOR=()
    if [ -n "$FLOOR_P99" ]; then FLOOR=(--disk-floor-us-p99 "$FLOOR_P99"); fi
    C=(--duration $((DURATION + 1)) --warmup 1 --size 1024 --persistent "${FLOOR[@]}" "${ACK[@]}")
    for P in 1 4; do
        run_case "Confirm latency, 1 KB persistent, open loop $CONFIRM_RATE msg/s, $P publisher(s) → $P consumer(s)" \
            confirm "${C[@]}" --rate "$CONFIRM_RATE" --producers $P --consumers $P
        run_case "Confirm latency, 1 KB persistent, max rate (window $CONFIRM_WINDOW per publisher), $P publisher(s) → $P consumer(s)" \
            confirm "${C[@]}" --max-rate --confirm "$CONFIRM_WINDOW" --producers $P --consumers $P
    done
    # Collected before appending: grep must not read the file it is writing.
    RATIOS=$(grep -F '| confirm_p99_over_disk_p99 |' "$REPORT" || echo "| (no floor measured) | | | | |")
    {
        echo "### Confirm p99 over the device floor (floor p99: ${FLOOR_P99:-n/a} µs; target ≤ 3 for ringmq)"
        echo
        echo "| case | metric | ringmq | rabbitmq | ringmq/rabbitmq |"
        echo "|---|---|---:|---:|---:|"
        echo "$RATIOS"
        echo
    } >>"$REPORT"
fi
wanted fanout && run_case "Fanout to 10 queues, 16 B" fanout "${D[@]}" --queues 10 --size 16 "${ACK[@]}"
wanted topic && run_case "Topic exchange, 10,000 bindings, 16 B" topic "${D[@]}" --bindings 10000 --size 16 "${ACK[@]}"
if wanted latency; then
    SAVE=(--save "$WORK/latency.json")
    run_case "Latency, open loop, 16 B ($SWEEP msg/s)" \
        latency --duration $((DURATION + 1)) --warmup 1 --sweep "$SWEEP" --size 16 "${ACK[@]}"
    SAVE=()
fi
wanted connections && run_case "100 connections × 100 queues, 100 msg/s each" \
    connections "${D[@]}" --connections 100 --queues 100 --rate 100 --size 16
# What each object costs: accept rate and RSS per idle connection, declare rate and RSS per queue.
# RSS is read from each broker's pid before and after; a later run starts from the RSS the
# earlier ones left (allocators keep freed memory), so the first run's figure is the honest one
# and the median leans low.
if wanted idle; then
    compare_args "${SCALE_RUNS:-$RUNS}"
    run_case "${IDLE_CONNECTIONS:-10000} idle connections (handshake, channel, then idle)" \
        idle --connections "${IDLE_CONNECTIONS:-10000}"
    compare_args "$RUNS"
fi
if wanted queues; then
    compare_args "${SCALE_RUNS:-$RUNS}"
    run_case "${DECLARE_QUEUES:-100000} queues declared on one connection (pipelined), then deleted" \
        declare --queues "${DECLARE_QUEUES:-100000}"
    compare_args "$RUNS"
fi
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
    echo "ringmq-perf pingpong --duration $((DURATION + 1)) --warmup 1 --sweep $SWEEP"
    echo
    "$PERF" pingpong --duration $((DURATION + 1)) --warmup 1 --sweep "$SWEEP" 2>/dev/null ||
        echo "FAILED"
    echo '```' 
} >>"$REPORT"

# The plot comes from the latency case; without it there is nothing to draw.
if [ -f "$WORK/latency.json" ] &&
    "$PERF" plot --input "$WORK/latency.json" --out "$PLOT" \
        --title "open-loop latency, 16 B, ringmq vs RabbitMQ ($STAMP)" 2>>"$WORK/last.err"; then
    echo "![latency vs rate]($(basename "$PLOT"))" >>"$REPORT"
elif wanted latency; then
    echo "(no plot: $(tail -1 "$WORK/last.err"))" >>"$REPORT"
fi
echo >>"$REPORT"

# Recovery runs last: it replaces the ringmq the other cases use with one on a fresh data dir,
# fills a durable queue with confirmed persistent messages, kills it with SIGKILL and times
# the restart. One run; the fill is the slow part.
if wanted_durable recovery; then
    log "case: recovery ($RECOVERY_MESSAGES × 1 KB)"
    stop_ringmq TERM
    DATA=$WORK/recovery-data
    mkdir -p "$DATA"
    FILL_ARGS=(fill --queue perf-recovery --messages "$RECOVERY_MESSAGES" --size 1024 --persistent
        --confirm 1000)
    {
        echo "## Recovery: $RECOVERY_MESSAGES × 1 KB persistent messages (confirmed), kill -9, restart"
        echo
        echo "ringmq only, fresh data dir, --shards ${SHARDS:-default}; one queue (so one shard holds the messages)."
        echo "data_dir_bytes is \`du -sb\` of the data dir before the kill (segment files are"
        echo "preallocated, so it includes the unused tail of each shard's current segment);"
        echo "replay speed = log bytes replayed (all shards) / the slowest shard's recovery time."
        echo
        echo '```'
        echo "ringmq-perf ${FILL_ARGS[*]}"
    } >>"$REPORT"
    if start_ringmq "$DATA" info "$WORK/recovery-1" &&
        "$PERF" "${FILL_ARGS[@]}" --url "$RINGMQ_URL" >>"$REPORT" 2>"$WORK/last.err"; then
        DATA_BYTES=$(du -sb "$DATA" | cut -f1)
        stop_ringmq KILL
        RESTART_NS=$(date +%s%N)
        if start_ringmq "$DATA" info "$WORK/recovery-2"; then
            READY_MS=$((($(date +%s%N) - RESTART_NS) / 1000000))
            DEPTH=$("$PERF" depth --url "$RINGMQ_URL" --queue perf-recovery 2>>"$WORK/last.err" || echo "?")
            REPORT_ARGS=(recovery-report --log "$WORK/recovery-2.err" --data-dir-bytes "$DATA_BYTES"
                --stored-messages "$RECOVERY_MESSAGES" --ready-ms "$READY_MS")
            {
                echo
                echo "ringmq-perf ${REPORT_ARGS[*]}"
                "$PERF" "${REPORT_ARGS[@]}" 2>&1 || true
                echo "  queue_depth_after_restart    $DEPTH"
            } >>"$REPORT"
            stop_ringmq TERM
        else
            echo "FAILED: restart: $(tail -3 "$WORK/recovery-2.err")" >>"$REPORT"
        fi
    else
        echo "FAILED: $(tail -3 "$WORK/last.err")" >>"$REPORT"
    fi
    printf '```\n\n' >>"$REPORT"
fi

echo "Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$REPORT"
log "wrote $REPORT"
