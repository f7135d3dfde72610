# The example workspace: its journey unit tests pass and it checks clean.
set -euo pipefail
cargo run --locked --quiet -- test journeys
cargo run --locked --quiet -- check journeys
