# The real client libraries the client checks drive (scripts/checks.d/50-clients.sh):
# Segment's and RudderStack's Python libraries from PyPI, Segment's Node
# library from npm into tests/clients/ (pinned by its package-lock.json).
set -euo pipefail
if ! python3 -c "import segment.analytics, rudderstack.analytics" >/dev/null 2>&1; then
    python3 -m pip install --quiet segment-analytics-python rudder-sdk-python
fi
cd tests/clients
if [ ! -d node_modules/@segment/analytics-node ] || [ package-lock.json -nt node_modules ]; then
    npm ci --no-audit --no-fund --silent
fi
