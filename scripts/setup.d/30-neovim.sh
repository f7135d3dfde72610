# Neovim, whose own LSP client drives `journeyc lsp` in checks.d/35-neovim.
set -euo pipefail
if ! command -v nvim >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq neovim >/dev/null
fi
