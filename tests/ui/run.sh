#!/usr/bin/env bash
# The management web UI in a real browser: Debian's chromium and chromium-driver (installed
# only when missing) driven by Python selenium (in a venv under target/), against a broker
# started here on free ports with its own data directory and stopped at the end, even on
# failure. The scenario is tests/ui/scenario.py; screenshots land in target/ui-screens/.
#
# usage: tests/ui/run.sh [RINGMQ_BINARY]
#   without an argument, builds target/release/ringmq.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=$TARGET/ui-venv
SCREENS=$TARGET/ui-screens
# Pinned so a new release cannot change the test under us; bump deliberately.
SELENIUM_VERSION=4.27.1
PIKA_VERSION=1.3.2
READY_TIMEOUT_S=20
STOP_TIMEOUT_S=10

log() { printf 'ui: %s\n' "$*" >&2; }

install_browser() {
    local missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

setup_python() {
    if [[ ! -x $VENV/bin/python ]]; then
        log "creating venv $VENV"
        python3 -m venv "$VENV"
    fi
    local stamp=$VENV/.ringmq-ui-$SELENIUM_VERSION-$PIKA_VERSION
    if [[ ! -f $stamp ]]; then
        log "installing selenium $SELENIUM_VERSION and pika $PIKA_VERSION"
        "$VENV/bin/python" -m pip install -q "selenium==$SELENIUM_VERSION" "pika==$PIKA_VERSION" \
            >"$TARGET/ui-pip.log" 2>&1 \
            || { log "pip install failed:"; tail -n 30 "$TARGET/ui-pip.log" >&2; exit 1; }
        touch "$stamp"
    fi
}

# shellcheck source=../common/broker.sh
source "$HERE/../common/broker.sh"
trap stop_broker EXIT

start_broker() {
    local binary=$1
    AMQP_PORT=$(free_port)
    HTTP_PORT=$(free_port)
    BROKER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ringmq-ui.XXXXXX")
    # Two shards, unpinned: the Shards page then has a mesh link each way to show.
    "$binary" --port "$AMQP_PORT" --listen 127.0.0.1 --shards 2 --pin none \
        --management-port "$HTTP_PORT" --prometheus-port 0 --data-dir "$BROKER_DIR/data" \
        >"$BROKER_DIR/stdout" 2>"$BROKER_DIR/stderr" &
    BROKER_PID=$!
    wait_broker_ready
    log "ringmq ready: AMQP 127.0.0.1:$AMQP_PORT, management http://127.0.0.1:$HTTP_PORT/"
}

main() {
    install_browser
    setup_python
    local binary=${1:-}
    if [[ -z $binary ]]; then
        log "building ringmq (release)"
        (cd "$ROOT" && cargo build --release --bin ringmq)
        binary=$TARGET/release/ringmq
    fi
    rm -rf "$SCREENS" && mkdir -p "$SCREENS"
    start_broker "$binary"
    local status=0
    RINGMQ_UI_URL="http://127.0.0.1:$HTTP_PORT/" RINGMQ_AMQP_PORT=$AMQP_PORT \
        RINGMQ_UI_SCREENS=$SCREENS RINGMQ_UI_PROFILE=$BROKER_DIR/chromium \
        "$VENV/bin/python" "$HERE/scenario.py" || status=$?
    if (( status != 0 )); then
        log "scenario failed ($status); broker stderr:"; tail -n 20 "$BROKER_DIR/stderr" >&2
    fi
    stop_broker
    return "$status"
}

main "$@"
