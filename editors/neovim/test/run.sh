#!/usr/bin/env bash
# Neovim's own LSP client against `journeyc lsp`, through
# editors/neovim/journey.lua. Needs `nvim` (0.7+) and a built journeyc on
# PATH or in $JOURNEYC.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
journeyc="${JOURNEYC:-journeyc}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/.git"
cat > "$work/schema.journey" <<'JOURNEY'
customer { plan: string }

event signed_up { source: string }
JOURNEY
cat > "$work/main.journey" <<'JOURNEY'
message welcome email { subject "Welcome" body "Hello" }

journey onboarding {
  trigger signed_upp
  wait 1d12h
  send welcome
}
JOURNEY
printf 'journey   tidy {\n trigger   signed_up\n    send welcome }\n' > "$work/tidy.journey"
"$journeyc" fmt - < "$work/tidy.journey" > "$work/tidy.expected"
cd "$work"
JOURNEY_CONFIG="$here/../journey.lua" \
JOURNEY_BROKEN="$work/main.journey" \
JOURNEY_MESSY="$work/tidy.journey" \
JOURNEY_FORMATTED="$work/tidy.expected" \
  nvim --headless -u NONE -i NONE -n \
    -c "let g:journeyc_path = '$journeyc'" \
    -c "luafile $here/check.lua"
