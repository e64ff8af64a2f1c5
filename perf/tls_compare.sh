#!/usr/bin/env bash
# amqps vs plain AMQP on one ringmq, same run (issue 12): the 1 KB maximum rate (throughput)
# and the p99 at an open-loop 10,000 msg/s (latency), each as `ringmq-perf compare` with
# alternating runs, medians of RUNS (3). Certificates are made here with the openssl CLI (a CA
# and a server certificate for 127.0.0.1). Writes perf/results/<date>-tls.md; stops what it
# started.
#
# Knobs: RUNS (3), DURATION seconds per run (10), RATE (10000), SIZE (1024), SHARDS (ringmq's default),
# PORT (5697), TLS_PORT (5698), NO_BUILD=1.
set -euo pipefail
# shellcheck source=lib/ringmq.sh
source "$(dirname "$0")/lib/ringmq.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-10000}
SIZE=${SIZE:-1024}
SHARDS=${SHARDS:-}
SHARDS_ARGS=()
[[ -n "$SHARDS" ]] && SHARDS_ARGS=(--shards "$SHARDS")
PORT=${PORT:-5697}
TLS_PORT=${TLS_PORT:-5698}
READY_TIMEOUT_S=30

if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release --bin ringmq --bin ringmq-perf
fi
stamp=$(date -u +%Y-%m-%d-%H%M)
out=perf/results/$stamp-tls.md
work=$(mktemp -d /tmp/ringmq-tls.XXXXXX)
broker_pid=""
cleanup() {
    [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ssl() { openssl "$@" >/dev/null 2>&1; }
ssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ringmq perf CA" \
    -keyout "$work/ca_key.pem" -out "$work/ca.pem"
ssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$work/server_key.pem" -out "$work/server.csr"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$work/server.ext"
ssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca_key.pem" \
    -CAcreateserial -days 2 -extfile "$work/server.ext" -out "$work/server.pem"

start_ringmq tls_compare "$work" "$READY_TIMEOUT_S" --port "$PORT" "${SHARDS_ARGS[@]}" --data-dir "$work/data" \
    --listen 127.0.0.1 --management-port 0 --prometheus-port 0 \
    --tls-port "$TLS_PORT" --tls-cert "$work/server.pem" --tls-key "$work/server_key.pem"

plain="amqp://guest:guest@127.0.0.1:$PORT/%2f"
tls="amqps://guest:guest@127.0.0.1:$TLS_PORT/%2f?cacertfile=$work/ca.pem"
compare=(target/release/ringmq-perf compare --a "$plain" --b "$tls" --a-label plain
    --b-label amqps --a-pid "$broker_pid" --b-pid "$broker_pid" --runs "$RUNS")
{
    echo "# amqps vs plain, $stamp"
    echo
    echo "One ringmq (${SHARDS:-the default number of} shards, TLS on $TLS_PORT with rustls, RSA 2048 certificate),"
    echo "ringmq-perf on the same $(nproc)-core machine, shared with other work ($(uname -r))."
    echo "Alternating runs of $DURATION s, medians of $RUNS; $SIZE-byte bodies, transient."
    echo "\`perf/tls_compare.sh\` (RUNS=$RUNS DURATION=$DURATION RATE=$RATE SIZE=$SIZE)."
    echo
    echo "## Maximum rate (throughput, 1 producer, 1 consumer)"
    echo
    "${compare[@]}" throughput --duration "$DURATION" --size "$SIZE"
    echo
    echo "## Latency at an open-loop $RATE msg/s"
    echo
    "${compare[@]}" latency --duration "$DURATION" --warmup 2 --size "$SIZE" --rate "$RATE"
} | tee "$out"
echo "tls_compare: wrote $out"
