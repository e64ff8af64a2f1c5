# Sourced by the perf scripts that run one ringmq of their own (api_polled.sh, tls_compare.sh).

# start_ringmq SCRIPT_NAME WORK_DIR READY_TIMEOUT_S RINGMQ_ARGS...
# Starts target/release/ringmq with the arguments given, stdout in WORK_DIR/ready and stderr in
# WORK_DIR/broker.log, and waits (bounded) for its ready line; sets broker_pid. Exits the
# script with the log's tail when the broker stops or is not ready in time.
start_ringmq() {
    local name=$1 work=$2 timeout_s=$3
    shift 3
    target/release/ringmq "$@" >"$work/ready" 2>"$work/broker.log" &
    broker_pid=$!
    local waited=0
    until grep -q "ringmq ready" "$work/ready"; do
        if ((waited >= timeout_s * 10)) || ! kill -0 "$broker_pid" 2>/dev/null; then
            echo "$name: ringmq did not become ready" >&2
            tail -20 "$work/broker.log" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}
