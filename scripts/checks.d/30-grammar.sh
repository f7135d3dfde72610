# The TextMate grammar tokenizes the example files as expected
# (vscode-textmate + vscode-oniguruma from npm, pinned by package-lock.json).
set -euo pipefail
cd editors/textmate
if [ ! -d node_modules/vscode-textmate ] || [ package-lock.json -nt node_modules ]; then
    npm ci --no-audit --no-fund
fi
npm test
