#!/usr/bin/env bash
# fuzz/run.sh SECONDS [TARGET...]: runs each fuzz target (all by default) for SECONDS with
# libFuzzer, starting from the committed seeds (fuzz/corpus-seed/TARGET, real client traffic
# recorded by fuzz/seeds/record.py) plus what earlier runs here found (target/fuzz-corpus).
# Prints one line per target: executions, corpus size, crashes. Exits 1 if any target crashed
# (the input is in target/fuzz-artifacts/TARGET/). Needs the nightly toolchain; installs cargo-fuzz.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(frame field_table topology_record wal_recovery session)
# Inputs longer than this rarely add coverage and slow every execution.
MAX_LEN=65536

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: SKIPPED: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cargo +nightly fuzz build -O --debug-assertions >&2

failed=0
for target in "${TARGETS[@]}"; do
    corpus=target/fuzz-corpus/$target
    mkdir -p "$corpus" "target/fuzz-artifacts/$target"
    seeds=()
    [[ -d fuzz/corpus-seed/$target ]] && seeds=("fuzz/corpus-seed/$target")
    log=target/fuzz-corpus/$target.log
    set +e
    cargo +nightly fuzz run -O --debug-assertions "$target" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=$MAX_LEN -print_final_stats=1 \
        -artifact_prefix="target/fuzz-artifacts/$target/" >"$log" 2>&1
    status=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    crashes=$(find "target/fuzz-artifacts/$target" -type f | wc -l)
    echo "fuzz $target: ${SECONDS_PER_TARGET}s, $execs executions, corpus $(find "$corpus" -type f | wc -l), crashes $crashes, exit $status"
    if ((status != 0 || crashes != 0)); then
        failed=1
        tail -n 40 "$log" >&2
    fi
done
exit $failed
