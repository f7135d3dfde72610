# Debian's Chromium, which tests/ui drives headless (playwright-core) to
# check the daemon's dashboard.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
