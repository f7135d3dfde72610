#!/usr/bin/env bash
# `journeyc simulate journeys` on one thread and on the default threads,
# alternating, on the 1M-event run: wall clock, user CPU, max RSS, the md5
# of each trace (which must all be equal) and the load average beside each
# run; then the total instructions of both modes on the 20,000-event slice
# (callgrind, every thread counted).
#
#   scripts/bench/simulate-threads.sh [JOURNEYC_BINARY] [GEN_EVENTS_BINARY] [PAIRS]
#
# The generator is deterministic (examples/gen_events.rs); its outputs are
# kept in $BENCH_DIR (default /tmp/journeyc-bench) between runs.
set -euo pipefail
bin=${1:-target/release/journeyc}
gen=${2:-target/release/examples/gen_events}
pairs=${3:-2}
dir=${BENCH_DIR:-/tmp/journeyc-bench}
workspace=${WORKSPACE:-journeys}
mkdir -p "$dir"
slice="$dir/events-20000.jsonl"
full="$dir/events-1000000.jsonl"
[ -s "$slice" ] || "$gen" 20000 2000 > "$slice"
[ -s "$full" ] || "$gen" 1000000 100000 > "$full"

run() { # label, threads arguments... -> one line of figures
    local label=$1 times="$dir/time.$$" md5 load
    shift
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    md5=$( { /usr/bin/time -f "%e %U %M" -o "$times" "$bin" simulate "$workspace" --events "$full" "$@"; } | md5sum | cut -d' ' -f1)
    read -r wall user rss < "$times"
    rm -f "$times"
    printf '%s  %s UTC  load %s  wall %s s  user %s s  %s MiB  md5 %s\n' \
        "$label" "$(date -u +%H:%M:%S)" "$load" "$wall" "$user" "$((rss / 1024))" "$md5"
}

echo "1M run: $full"
for _ in $(seq "$pairs"); do
    run "threads=1      " --threads 1
    run "threads=default"
done

instructions() { # threads arguments... -> total instructions (Ir) of one simulate of the slice
    local out="$dir/callgrind.$$.out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" simulate "$workspace" --events "$slice" "$@" > "$dir/slice.$$.$#" 2> "$dir/callgrind.log"
    callgrind_annotate "$out" 2> /dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
    rm -f "$out"
}
one=$(instructions --threads 1)
default=$(instructions)
cmp "$dir/slice.$$.2" "$dir/slice.$$.0"
rm -f "$dir/slice.$$.2" "$dir/slice.$$.0"
awk -v a="$one" -v b="$default" 'BEGIN {
    printf "callgrind slice  threads=1 %.0f Ir (%.0f per event)  default %.0f Ir (%.0f per event)  default/1 %.3f\n", a, a / 20000, b, b / 20000, b / a }'
