# The example workspace is in the canonical layout (`journeyc fmt`).
set -euo pipefail
cargo run --locked --quiet -- fmt --check journeys
