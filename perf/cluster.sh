#!/usr/bin/env bash
# A 3-node quorum queue, ringmq against RabbitMQ 3.10.8, in the same network namespaces and the
# same run (issue 13, "Performance"): the confirmed 1 KB publish rate (a window of CONFIRM_WINDOW
# unconfirmed messages) and the confirm latency at an open-loop CONFIRM_RATE msg/s, each as
# `ringmq-perf compare` (alternating runs, medians of RUNS).
#
# Layout (made here, deleted on exit; never the host's own interfaces): a hub namespace holding a
# bridge, one namespace per node with a veth pair to it (node i is SUBNET.i), and one for the
# load tool (SUBNET.100). Each node namespace runs one ringmq node (AMQP 5672, cluster port
# 25672) and one RabbitMQ node (AMQP 5673, distribution 25673, its own epmd): both clusters are
# up for the whole run and the runs alternate between them. The queue is declared through node
# 1 by the load tool's setup connection, so node 1 leads it on both brokers, and the load goes
# to node 1.
#
# Three nodes share this machine's cores, so ringmq runs with `--pin none` (with its default
# pinning all three nodes would put their shards on the same cores); otherwise both brokers run
# their defaults, but for letting guest in from the load tool's namespace (loopback_users none on
# both). Writes perf/results/<date>-cluster-<QUEUE>.md.
#
# Knobs: RUNS (3), DURATION seconds per run (10), CONFIRM_RATE (2000), CONFIRM_WINDOW (1000),
# SIZE (1024), QUEUE (quorum; classic: a durable classic queue on node 1, which only node 1
# holds), SUBNET (10.213.60), NO_BUILD=1, READY_TIMEOUT_S (180).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CONFIRM_RATE=${CONFIRM_RATE:-2000}
CONFIRM_WINDOW=${CONFIRM_WINDOW:-1000}
SIZE=${SIZE:-1024}
QUEUE=${QUEUE:-quorum}
SUBNET=${SUBNET:-10.213.60}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-180}
NODES=3
SECRET=cluster-perf-shared-secret
RINGMQ_PORT=5672
RABBIT_PORT=5673
RABBITMQ_SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server
RABBITMQCTL=/usr/lib/rabbitmq/bin/rabbitmqctl

log() { echo "cluster.sh: $*" >&2; }

for tool in ip "$RABBITMQ_SERVER" "$RABBITMQCTL"; do
    command -v "$tool" >/dev/null || { log "needs $tool (iproute2, rabbitmq-server)"; exit 1; }
done
if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release --bin ringmq --bin ringmq-perf >&2
fi

stamp=$(date -u +%Y-%m-%d-%H%M)
out=perf/results/$stamp-cluster-$QUEUE.md
work=$(mktemp -d /tmp/ringmq-cluster-perf.XXXXXX)
tag=$$
hub=rqc-h-$tag
client=rqc-c-$tag
node_ns() { echo "rqc-n$1-$tag"; }
address() { echo "$SUBNET.$1"; }
pids=()

cleanup() {
    for i in $(seq 1 $NODES); do
        ip netns exec "$(node_ns "$i")" env HOME="$work/rabbit-home" RABBITMQ_USE_LONGNAME=true \
            timeout 30 "$RABBITMQCTL" -n "rabbit@$(address "$i")" stop >/dev/null 2>&1 || true
    done
    for pid in "${pids[@]}"; do kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for i in $(seq 1 $NODES); do
        # epmd and anything else left in the namespace.
        ip netns pids "$(node_ns "$i")" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$(node_ns "$i")" 2>/dev/null || true
    done
    ip netns del "$client" 2>/dev/null || true
    ip netns del "$hub" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# ---- namespaces ----------------------------------------------------------------------------
ip netns add "$hub"
ip -n "$hub" link add br0 type bridge
ip -n "$hub" link set br0 up
join_bridge() { # NAMESPACE HOST_NUMBER
    local ns=$1 n=$2
    local veth="rqc${n}x$tag"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "$veth" netns "$hub"
    ip -n "$hub" link set "$veth" master br0 up
    ip -n "$ns" addr add "$(address "$n")/24" dev eth0
    ip -n "$ns" link set eth0 up
}
for i in $(seq 1 $NODES); do join_bridge "$(node_ns "$i")" "$i"; done
join_bridge "$client" 100
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# ---- ringmq --------------------------------------------------------------------------------
ringmq_args() { # NODE
    local i=$1
    local args=(--listen "$(address "$i")" --port $RINGMQ_PORT --pin none --loopback-users none
        --data-dir "$work/ringmq-$i" --management-port 0 --prometheus-port 0
        --node-name "ringmq@n$i" --cluster-port 25672 --cluster-secret "$SECRET")
    for p in $(seq 1 $NODES); do
        [[ $p == "$i" ]] || args+=(--peer "ringmq@n$p=$(address "$p"):25672")
    done
    echo "${args[@]}"
}
for i in $(seq 1 $NODES); do
    mkdir -p "$work/ringmq-$i"
    # shellcheck disable=SC2046
    in_ns "$(node_ns "$i")" setsid target/release/ringmq $(ringmq_args "$i") \
        >"$work/ringmq-$i.ready" 2>"$work/ringmq-$i.log" &
    pids+=($!)
done
for i in $(seq 1 $NODES); do
    waited=0
    until grep -qs "ringmq ready" "$work/ringmq-$i.ready"; do
        if ((waited >= READY_TIMEOUT_S * 10)); then
            log "ringmq node $i not ready"; tail -20 "$work/ringmq-$i.log" >&2; exit 1
        fi
        sleep 0.1; waited=$((waited + 1))
    done
done
log "ringmq nodes ready"

# ---- RabbitMQ ------------------------------------------------------------------------------
mkdir -p "$work/rabbit-home"
head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z' >"$work/rabbit-home/.erlang.cookie"
chmod 400 "$work/rabbit-home/.erlang.cookie"
rabbit_env() { # NODE
    local i=$1
    local dir="$work/rabbit-$i"
    echo HOME="$work/rabbit-home" RABBITMQ_USE_LONGNAME=true \
        RABBITMQ_NODENAME="rabbit@$(address "$i")" RABBITMQ_NODE_IP_ADDRESS="$(address "$i")" \
        RABBITMQ_NODE_PORT=$RABBIT_PORT RABBITMQ_DIST_PORT=$((RABBIT_PORT + 20000)) \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_PID_FILE="$dir/rabbit.pid"
}
rabbitmqctl_on() { # NODE ARGS...
    local i=$1; shift
    # shellcheck disable=SC2046
    in_ns "$(node_ns "$i")" env $(rabbit_env "$i") timeout "$READY_TIMEOUT_S" "$RABBITMQCTL" \
        -n "rabbit@$(address "$i")" "$@"
}
for i in $(seq 1 $NODES); do
    dir="$work/rabbit-$i"
    mkdir -p "$dir/mnesia" "$dir/log"
    # guest may connect from the load tool's namespace.
    printf 'loopback_users = none\n' >"$dir/rabbitmq.conf"
    : >"$dir/rabbitmq-env.conf"
    echo "[]." >"$dir/enabled_plugins"
    # shellcheck disable=SC2046
    in_ns "$(node_ns "$i")" env $(rabbit_env "$i") setsid "$RABBITMQ_SERVER" \
        >"$dir/stdout" 2>&1 &
    pids+=($!)
done
for i in $(seq 1 $NODES); do
    # await_startup fails at once while the node is not yet registered with epmd: ask again.
    started=$(date +%s)
    until rabbitmqctl_on "$i" await_startup >/dev/null 2>&1; do
        if (($(date +%s) - started >= READY_TIMEOUT_S)); then
            log "RabbitMQ node $i did not start"; tail -20 "$work/rabbit-$i/stdout" >&2; exit 1
        fi
        sleep 1
    done
done
for i in $(seq 2 $NODES); do
    rabbitmqctl_on "$i" stop_app >/dev/null
    rabbitmqctl_on "$i" join_cluster "rabbit@$(address 1)" >/dev/null
    rabbitmqctl_on "$i" start_app >/dev/null
done
RABBIT_VERSION=$(rabbitmqctl_on 1 version 2>/dev/null || echo unknown)
rabbitmqctl_on 1 cluster_status >"$work/rabbit-cluster-status" 2>&1 || true
log "RabbitMQ $RABBIT_VERSION cluster of $NODES ready"

# ---- load ----------------------------------------------------------------------------------
ringmq_url="amqp://guest:guest@$(address 1):$RINGMQ_PORT/%2f"
rabbit_url="amqp://guest:guest@$(address 1):$RABBIT_PORT/%2f"
compare=(target/release/ringmq-perf compare --a "$ringmq_url" --b "$rabbit_url" --a-label ringmq
    --b-label rabbitmq --runs "$RUNS")
load=(--persistent --size "$SIZE" --duration "$DURATION" --warmup 1 --prefetch 1000 --multiple-ack 100)
[[ $QUEUE == quorum ]] && load+=(--quorum)
{
    echo "# 3-node cluster, $QUEUE queue: ringmq vs RabbitMQ $RABBIT_VERSION, $stamp"
    echo
    echo "Three ringmq nodes and three RabbitMQ nodes, one of each per network namespace, on one"
    echo "$(nproc)-core machine shared with other work ($(uname -r)); the load tool in a fourth"
    if [[ $QUEUE == quorum ]]; then
        echo "namespace. One quorum queue (\`x-queue-type: quorum\`, 3 members, led by node 1),"
    else
        echo "namespace. One durable classic queue on node 1 (not replicated),"
    fi
    echo "persistent $SIZE-byte messages, one publisher and one consumer on node 1."
    echo "ringmq: $(git rev-parse --short HEAD 2>/dev/null || echo '?') \`--pin none\`."
    echo "Alternating runs of $DURATION s, medians of $RUNS. \`perf/cluster.sh\` (RUNS=$RUNS"
    echo "DURATION=$DURATION CONFIRM_RATE=$CONFIRM_RATE CONFIRM_WINDOW=$CONFIRM_WINDOW SIZE=$SIZE QUEUE=$QUEUE)."
    echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "## Confirmed publish rate (a window of $CONFIRM_WINDOW unconfirmed messages)"
    echo
    in_ns "$client" "${compare[@]}" confirm "${load[@]}" --max-rate --confirm "$CONFIRM_WINDOW"
    echo
    echo "## Confirm latency at an open-loop $CONFIRM_RATE msg/s (from the intended send time)"
    echo
    in_ns "$client" "${compare[@]}" confirm "${load[@]}" --rate "$CONFIRM_RATE"
    echo
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
} | tee "$out"
log "wrote $out"
