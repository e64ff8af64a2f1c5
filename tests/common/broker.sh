# Starting and stopping a ringmq for the script-driven suites (tests/compat/run.sh,
# tests/ui/run.sh): sourced, not run. The caller defines `log` and sets STOP_TIMEOUT_S and
# READY_TIMEOUT_S; `trap stop_broker EXIT` makes sure the broker goes with the script.

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

BROKER_PID=
BROKER_DIR=
stop_broker() {
    if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        local waited=0
        while kill -0 "$BROKER_PID" 2>/dev/null && (( waited < STOP_TIMEOUT_S * 10 )); do
            sleep 0.1; waited=$((waited + 1))
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=
    if [[ -n $BROKER_DIR ]]; then rm -rf "$BROKER_DIR"; BROKER_DIR=; fi
}

# After `"$binary" ... >"$BROKER_DIR/stdout" 2>"$BROKER_DIR/stderr" & BROKER_PID=$!`: waits for
# the ready line, or exits with the broker's stderr if it dies or takes too long.
wait_broker_ready() {
    local waited=0
    until grep -q '^ringmq ready on ' "$BROKER_DIR/stdout" 2>/dev/null; do
        if ! kill -0 "$BROKER_PID" 2>/dev/null || (( waited >= READY_TIMEOUT_S * 10 )); then
            log "ringmq did not become ready; stderr:"; tail -n 40 "$BROKER_DIR/stderr" >&2
            exit 1
        fi
        sleep 0.1; waited=$((waited + 1))
    done
}
