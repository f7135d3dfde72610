# The VS Code extension builds (npm ci && npm run compile) and declares the
# language, its grammar and its configuration.
set -euo pipefail
cd editors/vscode
if [ ! -d node_modules/vscode-languageclient ] || [ package-lock.json -nt node_modules ]; then
    npm ci --no-audit --no-fund
fi
npm run compile
node -e '
const fs = require("fs");
const pkg = require("./package.json");
const language = pkg.contributes.languages.find((l) => l.id === "journey");
if (!language || !language.extensions.includes(".journey")) throw new Error("no journey language");
for (const file of [language.configuration, pkg.contributes.grammars[0].path, pkg.main]) {
  if (!fs.existsSync(file)) throw new Error(`missing ${file}`);
}
JSON.parse(fs.readFileSync(language.configuration, "utf8"));
if (!/exports\.activate\s*=/.test(fs.readFileSync(pkg.main, "utf8"))) throw new Error("no activate()");
console.log("extension built:", pkg.main);
'
