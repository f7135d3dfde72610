# The example workspace journeys/: it checks without warnings, its journey
# unit tests pass, and it simulates over the sample events in examples/ (the
# whole store, then each campaign's stream) with sends, funnels and no
# template that fails to render; the embedding example runs on it.
set -euo pipefail
cargo build --locked --quiet --bin journeyc
journeyc=target/debug/journeyc

$journeyc check --deny-warnings journeys
$journeyc test journeys

for events in examples/events.jsonl examples/campaigns/*.jsonl; do
    trace=$($journeyc simulate journeys --events "$events")
    sends=$(grep -c '"kind":"send"' <<<"$trace" || true)
    if [ "$sends" -eq 0 ]; then
        echo "$events: no sends" >&2
        exit 1
    fi
    if grep -q '"reason":"render_error"' <<<"$trace"; then
        echo "$events: a template failed to render:" >&2
        grep '"reason":"render_error"' <<<"$trace" | head -3 >&2
        exit 1
    fi
    summary=$($journeyc simulate journeys --events "$events" --summary)
    grep -q '^journey ' <<<"$summary"
    echo "$events: $(wc -l <<<"$trace") trace lines, $sends sends"
done

# The library embedding example checks and simulates the same workspace.
embedded=$(cargo run --locked --quiet --example embed -- journeys examples/events.jsonl)
grep -q '^onboarding: [0-9]* entered' <<<"$embedded"
grep -q '^first Persian send: ' <<<"$embedded"
echo "examples/embed.rs: $(grep -c ' entered, ' <<<"$embedded") journeys simulated"
