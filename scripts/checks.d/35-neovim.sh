# Neovim's built-in LSP client, configured by editors/neovim/journey.lua,
# gets diagnostics, hover and formatting from `journeyc lsp`.
set -euo pipefail
cargo build --locked --quiet --bin journeyc
JOURNEYC="$PWD/target/debug/journeyc" editors/neovim/test/run.sh
