#!/usr/bin/env bash
# Runs the broker integration suites of py-amqp (t/integration/test_rmq.py) and kombu
# (t/integration/test_py_amqp.py) against ringmq, from their PyPI source distributions. py-amqp's
# TLS cases run against ringmq's amqps listener with certificates made here by the openssl CLI
# (the sdist has no t/certs): a CA, a server certificate for 127.0.0.1/localhost, a client
# certificate (CN=guest) signed by the CA and a "broken" self-signed one.
#
# usage: tests/compat/run.sh [RINGMQ_BINARY]
#   without an argument, builds target/release/ringmq.
# env:
#   COMPAT_SHARDS         shard counts to run against, default "1 2"
#   COMPAT_EXTERNAL_PORT  do not start ringmq; use a broker already on 127.0.0.1:PORT
#                         (e.g. RabbitMQ, to check the expected-failures list)
#   COMPAT_EXTERNAL_TLS_PORT  its amqps port, trusting $WORK/certs; without it the TLS
#                         cases are deselected for an external broker
#
# Exits non-zero if any test fails that tests/compat/expected-failures.txt does not list.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$TARGET/compat
VENV=$TARGET/compat-venv
# Pinned so the expected-failures list stays true; bump deliberately.
AMQP_VERSION=5.4.2
KOMBU_VERSION=5.7.0
READY_TIMEOUT_S=10
STOP_TIMEOUT_S=10

log() { printf 'compat: %s\n' "$*" >&2; }

setup_python() {
    if [[ ! -x $VENV/bin/python ]]; then
        log "creating venv $VENV"
        python3 -m venv "$VENV"
    fi
    local stamp=$VENV/.ringmq-compat-$AMQP_VERSION-$KOMBU_VERSION
    mkdir -p "$WORK"
    if [[ ! -f $stamp ]]; then
        log "downloading amqp $AMQP_VERSION and kombu $KOMBU_VERSION source distributions"
        rm -rf "$WORK/src" && mkdir -p "$WORK/src"
        "$VENV/bin/python" -m pip install -q --upgrade pip >"$WORK/pip.log" 2>&1
        "$VENV/bin/python" -m pip download -q --no-binary :all: --no-deps \
            -d "$WORK/src" "amqp==$AMQP_VERSION" "kombu==$KOMBU_VERSION"
        (cd "$WORK/src" && for f in *.tar.gz; do tar xzf "$f"; done)
        "$VENV/bin/python" -m pip install -q pytest \
            "$WORK/src/amqp-$AMQP_VERSION" "$WORK/src/kombu-$KOMBU_VERSION" >>"$WORK/pip.log" 2>&1 \
            || { log "pip install failed:"; tail -n 30 "$WORK/pip.log" >&2; exit 1; }
        touch "$stamp"
    fi
}

# make_certs DIR: py-amqp's t/certs layout (ca_certificate.pem, client_certificate.pem,
# client_key.pem, client_*_broken.pem) plus server_*.pem for the broker.
make_certs() {
    local dir=$1
    [[ -f $dir/server_certificate.pem ]] && return 0
    mkdir -p "$dir"
    (
        cd "$dir"
        local quiet=(-days 30)
        openssl req -x509 -newkey rsa:2048 -nodes "${quiet[@]}" -subj "/CN=ringmq compat CA" \
            -keyout ca_key.pem -out ca_certificate.pem
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
        # Extensions make the client certificate X.509 v3: webpki (rustls) refuses v1 ones.
        printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >client.ext
        for name in server client; do
            local cn=localhost
            [[ $name == client ]] && cn=guest
            openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" \
                -keyout "${name}_key.pem" -out "$name.csr"
            openssl x509 -req -in "$name.csr" -CA ca_certificate.pem -CAkey ca_key.pem \
                -CAcreateserial "${quiet[@]}" -extfile "$name.ext" -out "${name}_certificate.pem"
        done
        openssl req -x509 -newkey rsa:2048 -nodes "${quiet[@]}" -subj "/CN=broken" \
            -keyout client_key_broken.pem -out client_certificate_broken.pem
    ) >"$WORK/certs.log" 2>&1 || { log "openssl failed:"; tail -n 20 "$WORK/certs.log" >&2; exit 1; }
}

# shellcheck source=../common/broker.sh
source "$HERE/../common/broker.sh"
trap stop_broker EXIT

# start_broker BINARY SHARDS -> sets PORT and TLS_PORT
start_broker() {
    local binary=$1 shards=$2
    PORT=$(free_port)
    TLS_PORT=$(free_port)
    BROKER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ringmq-compat.XXXXXX")
    "$binary" --port "$PORT" --listen 127.0.0.1 --shards "$shards" \
        --data-dir "$BROKER_DIR/data" --tls-port "$TLS_PORT" \
        --tls-cert "$CERTS/server_certificate.pem" --tls-key "$CERTS/server_key.pem" \
        --tls-ca "$CERTS/ca_certificate.pem" --tls-verify-peer \
        >"$BROKER_DIR/stdout" 2>"$BROKER_DIR/stderr" &
    BROKER_PID=$!
    wait_broker_ready
    log "ringmq ready on 127.0.0.1:$PORT (amqps $TLS_PORT) with $shards shard(s)"
}

# run_suite NAME DIR TESTFILE PORT LABEL [PYTEST ARGS...] -> junit xml in $WORK/results
run_suite() {
    local name=$1 dir=$2 file=$3 port=$4 label=$5
    shift 5
    local xml=$WORK/results/$label-$name.xml
    mkdir -p "$WORK/results"
    log "running $name $file ($label)"
    (cd "$dir" && RABBITMQ_HOST=127.0.0.1 RABBITMQ_5672_TCP=$port \
        RABBITMQ_5671_TCP=${TLS_PORT:-} COMPAT_TLS_CERTS=$CERTS \
        "$VENV/bin/python" -m pytest "$file" "$@" -p no:cacheprovider -o addopts= -q \
        -W ignore::pytest.PytestUnknownMarkWarning --junitxml="$xml" \
        >"$WORK/results/$label-$name.log" 2>&1) || true
    tail -n 3 "$WORK/results/$label-$name.log" >&2
}

main() {
    setup_python
    local binary=${1:-}
    if [[ -z ${COMPAT_EXTERNAL_PORT:-} && -z $binary ]]; then
        log "building ringmq (release)"
        (cd "$ROOT" && cargo build --release --bin ringmq)
        binary=$TARGET/release/ringmq
    fi
    rm -rf "$WORK/results"
    CERTS=$WORK/certs
    make_certs "$CERTS"
    # py-amqp's TLS cases read t/certs relative to the sdist.
    rm -rf "$WORK/src/amqp-$AMQP_VERSION/t/certs"
    cp -r "$CERTS" "$WORK/src/amqp-$AMQP_VERSION/t/certs"
    local labels=()
    for shards in ${COMPAT_SHARDS:-1 2}; do
        local label=shards$shards
        local selection=()
        if [[ -n ${COMPAT_EXTERNAL_PORT:-} ]]; then
            PORT=$COMPAT_EXTERNAL_PORT; label=external
            TLS_PORT=${COMPAT_EXTERNAL_TLS_PORT:-}
            [[ -z $TLS_PORT ]] && selection=(-k "not tls")
        else
            start_broker "$binary" "$shards"
        fi
        run_suite amqp "$WORK/src/amqp-$AMQP_VERSION" t/integration/test_rmq.py "$PORT" "$label" \
            ${selection[@]+"${selection[@]}"}
        run_suite kombu "$WORK/src/kombu-$KOMBU_VERSION" t/integration/test_py_amqp.py "$PORT" "$label"
        run_suite patterns "$HERE" test_patterns.py "$PORT" "$label" \
            ${selection[@]+"${selection[@]}"}
        stop_broker
        labels+=("$label")
        [[ -n ${COMPAT_EXTERNAL_PORT:-} ]] && break
    done
    "$VENV/bin/python" "$HERE/report.py" "$HERE/expected-failures.txt" "$WORK/results"/*.xml
}

main "$@"
