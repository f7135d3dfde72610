# mimalloc (the allocator) is C: make sure there is a compiler; the lint
# components of rustup's toolchain.
set -euo pipefail
if ! command -v cc >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq gcc
fi
rustup component add clippy rustfmt >/dev/null 2>&1 || true
