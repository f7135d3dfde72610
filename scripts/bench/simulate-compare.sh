#!/usr/bin/env bash
# Compares two `journeyc` binaries on `journeyc simulate journeys`, in one run
# on one machine: instructions per input event (callgrind, on a 20,000-event
# slice), user CPU and input events/s on the 1M-event run, and the md5 of
# both traces (which must be equal).
#
#   scripts/bench/simulate-compare.sh BASELINE_BINARY NEW_BINARY [GEN_EVENTS_BINARY]
#
# The generator is deterministic (examples/gen_events.rs); its outputs are
# kept in $BENCH_DIR (default /tmp/journeyc-bench) between runs.
set -euo pipefail
base=${1:?usage: simulate-compare.sh BASELINE NEW [GEN_EVENTS]}
new=${2:?usage: simulate-compare.sh BASELINE NEW [GEN_EVENTS]}
gen=${3:-target/release/examples/gen_events}
dir=${BENCH_DIR:-/tmp/journeyc-bench}
workspace=${WORKSPACE:-journeys}
slice_events=${SLICE_EVENTS:-20000}
full_events=${FULL_EVENTS:-1000000}
mkdir -p "$dir"
slice="$dir/events-$slice_events.jsonl"
full="$dir/events-$full_events.jsonl"
[ -s "$slice" ] || "$gen" "$slice_events" $((slice_events / 10)) > "$slice"
[ -s "$full" ] || "$gen" "$full_events" $((full_events / 10)) > "$full"

instructions() { # binary -> total instructions (Ir) of one simulate of the slice
    local out="$dir/callgrind.$$.out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$1" simulate "$workspace" --events "$slice" > /dev/null 2> "$dir/callgrind.log"
    callgrind_annotate "$out" 2> /dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
    rm -f "$out"
}

full_run() { # binary -> "user_seconds max_rss_kb md5"
    local times="$dir/time.$$"
    local md5
    md5=$( { /usr/bin/time -f "%U %M" -o "$times" "$1" simulate "$workspace" --events "$full"; } | md5sum | cut -d' ' -f1)
    echo "$(cat "$times") $md5"
    rm -f "$times"
}

echo "slice: $slice_events events; full: $full_events events; workspace: $workspace"
base_ir=$(instructions "$base")
new_ir=$(instructions "$new")
awk -v b="$base_ir" -v n="$new_ir" -v e="$slice_events" 'BEGIN {
    printf "callgrind  baseline %.0f Ir (%.0f per event)  new %.0f Ir (%.0f per event)  new/baseline %.3f\n", b, b / e, n, n / e, n / b }'
read -r base_user base_rss base_md5 <<< "$(full_run "$base")"
read -r new_user new_rss new_md5 <<< "$(full_run "$new")"
awk -v b="$base_user" -v n="$new_user" -v e="$full_events" -v br="$base_rss" -v nr="$new_rss" 'BEGIN {
    printf "full run   baseline %.2f s user (%.0f events/s, %.0f MiB)  new %.2f s user (%.0f events/s, %.0f MiB)  new/baseline CPU %.3f\n",
        b, e / b, br / 1024, n, e / n, nr / 1024, n / b }'
echo "trace md5  baseline $base_md5  new $new_md5"
[ "$base_md5" = "$new_md5" ] || { echo "error: the traces differ" >&2; exit 1; }
