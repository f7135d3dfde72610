# The dashboard (/ui) in headless Chromium: a daemon on journeys/ fed the
# example events, then the page checked against the stats API; screenshots
# go to target/ui/. Then the same behind --protect-ui, and the static
# report of a simulation.
set -euo pipefail
cargo build --locked --quiet --bin journeyc
journeyc="$PWD/target/debug/journeyc"
(cd tests/ui && { [ -d node_modules/playwright-core ] && [ ! package-lock.json -nt node_modules ]; } || npm ci --no-audit --no-fund)
work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start() { # DATA [FLAGS…]: starts a daemon, prints its address
    local data="$1"; shift
    mkdir -p "$data"
    "$journeyc" serve journeys --data "$data" --listen 127.0.0.1:0 --token ui-token "$@" >/dev/null 2>"$data/daemon.log" &
    pids+=($!)
    for _ in $(seq 1 400); do
        [ -s "$data/addr" ] && { cat "$data/addr"; return; }
        sleep 0.05
    done
    cat "$data/daemon.log" >&2
    exit 1
}

addr="$(start "$work/open")"
node tests/ui/feed.mjs "http://$addr" ui-token examples/events.jsonl
node tests/ui/dashboard.mjs "http://$addr" ui-token target/ui

addr="$(start "$work/protected" --protect-ui)"
node tests/ui/dashboard.mjs "http://$addr" ui-token target/ui --protected

# The same page, static, from a simulation (journeyc simulate --report).
"$journeyc" simulate journeys --events examples/events.jsonl --report "$work/report.html" >/dev/null
"$journeyc" simulate journeys --events examples/events.jsonl --summary --format json >"$work/summary.json"
node tests/ui/dashboard.mjs "file://$work/report.html" "$work/summary.json" target/ui --report
