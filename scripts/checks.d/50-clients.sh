# Real client libraries (Segment Python and Node, RudderStack Python) against a
# daemon started here: built binary, temporary data directory, a free port.
set -euo pipefail
cargo build --locked --quiet
binary="$PWD/target/debug/journeyc"
root="$(mktemp -d)"
trap 'kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$root"' EXIT
mkdir -p "$root/ws" "$root/data"
cp tests/clients/stream.journey "$root/ws/"
token="client-check-token"
"$binary" serve "$root/ws" --data "$root/data" --listen 127.0.0.1:0 --token "$token" \
    --sink "jsonl:$root/data/sends.jsonl" 2>"$root/daemon.log" &
daemon=$!
for _ in $(seq 200); do
    [ -s "$root/data/addr" ] && break
    sleep 0.05
done
[ -s "$root/data/addr" ] || { cat "$root/daemon.log"; exit 1; }
addr="$(cat "$root/data/addr")"
(cd tests/clients && ${PYTHON:-python3} check.py "http://$addr" "$token" "$root/ws/stream.journey") \
    || { echo "--- daemon log"; tail -50 "$root/daemon.log"; exit 1; }
