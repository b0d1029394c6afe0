#!/usr/bin/env bash
# Builds the fuzz targets with cargo-fuzz on the stable toolchain and runs
# each for a while; fails on any crash (a broken invariant, a panic, a
# timeout or running out of memory).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Defaults: 20 seconds for each of envelope, mime and note. New inputs the
# run finds go to a scratch directory (FUZZ_WORK, default a temporary one);
# the committed corpus under fuzz/corpus/ is only read. A crashing input
# is left in fuzz/artifacts/TARGET/ and printed in hex. FUZZ_ARGS adds
# libFuzzer flags (e.g. FUZZ_ARGS=-runs=1000000 to stop at a count).
#
# Stable works: without a sanitizer (`--sanitizer none`) cargo-fuzz needs no
# -Z flag; the coverage instrumentation is the stable
# `-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-*`.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-20}
shift || true
if [ $# -gt 0 ]; then targets=("$@"); else targets=(envelope mime note); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

echo "== building the fuzz targets (release, coverage instrumentation, no sanitizer)"
cargo fuzz build --sanitizer none

work=${FUZZ_WORK:-}
if [ -z "$work" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
failed=()
summary=()
for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${secs}s"
    mkdir -p "$work/$t" "artifacts/$t"
    dict=()
    if [ -f "dict/$t.dict" ]; then dict=("-dict=dict/$t.dict"); fi
    log="$work/$t.log"
    touch "$work/$t.start"
    status=0
    cargo fuzz run --sanitizer none "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    stat() { { grep -Eo "stat::$1: +[0-9]+" "$log" || true; } | awk '{print $2}' | tail -1; }
    runs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    cov=$({ grep -Eo '^#[0-9]+[[:space:]]+DONE[[:space:]]+cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" || true; } \
        | sed -E 's/^#[0-9]+[[:space:]]+DONE[[:space:]]+//' | tail -1)
    line="$t: ${runs:-?} executions, ${rate:-?} exec/s, ${cov:-no coverage line}"
    summary+=("$line")
    echo "$line"
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        echo "!! $t failed (exit $status); the end of its log:" >&2
        tail -60 "$log" >&2
        find "artifacts/$t" -type f -newer "$work/$t.start" | while read -r a; do
            echo "!! input $a:" >&2
            od -An -tx1 -v "$a" | head -40 >&2
        done
    fi
done

echo "== fuzzing summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "no crash in ${#targets[@]} targets"
