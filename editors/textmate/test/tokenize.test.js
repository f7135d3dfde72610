// Tokenizes example .journey files with the grammar (vscode-textmate +
// vscode-oniguruma, the engine VS Code uses) and checks the scopes of
// chosen tokens.
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const root = path.resolve(__dirname, "../../..");
const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm"));
const ready = oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));

async function grammar() {
  await ready;
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async () =>
      vsctm.parseRawGrammar(fs.readFileSync(path.join(__dirname, "..", "journey.tmLanguage.json"), "utf8"), "journey.tmLanguage.json"),
  });
  return registry.loadGrammar("source.journey");
}

/** Every token of a text: { line, text, scopes }. */
async function tokenize(text) {
  const g = await grammar();
  const tokens = [];
  let state = vsctm.INITIAL;
  text.split("\n").forEach((line, index) => {
    const result = g.tokenizeLine(line, state);
    for (const token of result.tokens) {
      tokens.push({ line: index, text: line.slice(token.startIndex, token.endIndex), scopes: token.scopes });
    }
    state = result.ruleStack;
  });
  return tokens;
}

/** Some token with this text carries the scope. */
function has(tokens, text, scope) {
  const found = tokens.filter((t) => t.text === text);
  assert.ok(found.length > 0, `no token ${JSON.stringify(text)}`);
  assert.ok(
    found.some((t) => t.scopes.includes(scope)),
    `${JSON.stringify(text)}: ${found.map((t) => t.scopes.join(" ")).join(" / ")} lacks ${scope}`,
  );
}

// A copy of the example workspace's schema and onboarding journey.
const example = fs.readFileSync(path.join(__dirname, "example.journey"), "utf8");

test("the example schema: declarations, fields, types, segments", async () => {
  const tokens = await tokenize(example);
  has(tokens, "customer", "storage.type.journey");
  has(tokens, "first_name", "variable.other.property.journey");
  has(tokens, "string", "support.type.journey");
  has(tokens, "?", "keyword.operator.optional.journey");
  has(tokens, "signed_up", "entity.name.type.event.journey");
  has(tokens, "high_value", "entity.name.type.segment.journey");
  has(tokens, "90d", "constant.numeric.duration.journey");
  has(tokens, "21:00", "constant.numeric.time-of-day.journey");
  has(tokens, "count", "support.function.journey");
  assert.ok(tokens.some((t) => t.scopes.includes("comment.line.double-slash.journey")));
});

test("the onboarding journey: statements, settings, templates, labels", async () => {
  const tokens = await tokenize(example);
  has(tokens, "onboarding", "entity.name.function.journey.journey");
  has(tokens, "welcome", "entity.name.function.message.journey");
  has(tokens, "email", "support.constant.channel.journey");
  has(tokens, "trigger", "keyword.other.setting.journey");
  has(tokens, "send", "keyword.control.journey");
  has(tokens, "10%", "constant.numeric.percent.journey");
  has(tokens, "day1", "entity.name.label.journey");
  has(tokens, "{{", "punctuation.section.template.begin.journey");
  has(tokens, "{{", "string.quoted.double.journey");
  has(tokens, "weekdays", "constant.language.day.journey");
  has(tokens, "!=", "keyword.operator.comparison.journey");
});

test("Persian text in strings and templates, wire names, time literals", async () => {
  const tokens = await tokenize(
    [
      'event order_completed "Order Completed" { order_id "orderId": string }',
      'message hi sms { body "سلام {{ customer.first_name | default(\'دوست\') }} 😀" }',
      "segment recent = customer.signed_up_at > 2026-01-01T00:00:00Z // جدید",
    ].join("\n"),
  );
  has(tokens, "order_completed", "entity.name.type.event.journey");
  has(tokens, '"orderId"', "string.quoted.double.wire-name.journey");
  has(tokens, "first_name", "meta.template.expression.journey");
  has(tokens, "first_name", "variable.other.property.journey");
  has(tokens, "سلام ", "string.quoted.double.journey");
  has(tokens, "2026-01-01T00:00:00Z", "constant.numeric.timestamp.journey");
  has(tokens, "// جدید", "comment.line.double-slash.journey");
});

test("engagement: wait for opened MESSAGE, clicked(MESSAGE); an event named opened stays an event", async () => {
  const tokens = await tokenize(
    [
      "  wait for opened welcome within 2d {",
      "    if clicked(welcome) {",
      "  wait for opened within 1d {}",
    ].join("\n"),
  );
  const scopes = (line, text) => tokens.find((t) => t.line === line && t.text === text).scopes;
  assert.ok(scopes(0, "opened").includes("support.function.engagement.journey"), scopes(0, "opened").join(" "));
  assert.ok(scopes(0, "wait").includes("keyword.control.journey"));
  assert.ok(scopes(1, "clicked").includes("support.function.journey"), scopes(1, "clicked").join(" "));
  const event = tokens.find((t) => t.line === 2 && t.text.includes("opened"));
  assert.ok(!event.scopes.some((s) => s.startsWith("support.function")), event.scopes.join(" "));
});

test("an API trigger: the keyword and its typed properties", async () => {
  const tokens = await tokenize(
    ["journey coupon_drop {", "  trigger api { coupon: string, amount: number? }", "  send coupon_ready", "}"].join("\n"),
  );
  has(tokens, "trigger", "keyword.other.setting.journey");
  has(tokens, "api", "keyword.other.setting.journey");
  has(tokens, "coupon", "variable.other.property.journey");
  has(tokens, "amount", "variable.other.property.journey");
  has(tokens, "number", "support.type.journey");
  has(tokens, "?", "keyword.operator.optional.journey");
});

test("every .journey file of the repository: comments scoped, no string crosses a line", async () => {
  const files = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (entry.name.startsWith(".") || entry.name === "target" || entry.name === "node_modules") continue;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith(".journey")) files.push(full);
    }
  };
  walk(path.join(root, "journeys"));
  walk(path.join(root, "tests/ok"));
  assert.ok(files.length >= 8, `only ${files.length} files`);
  for (const file of files) {
    const tokens = await tokenize(fs.readFileSync(file, "utf8"));
    for (const token of tokens) {
      if (token.text.startsWith("//") && !token.scopes.some((s) => s.startsWith("string"))) {
        assert.ok(token.scopes.includes("comment.line.double-slash.journey"), `${file}:${token.line + 1}`);
      }
    }
    const firsts = new Map();
    for (const token of tokens) if (!firsts.has(token.line)) firsts.set(token.line, token);
    for (const token of firsts.values()) {
      assert.ok(!token.scopes.includes("string.quoted.double.journey"), `${file}:${token.line + 1} starts inside a string`);
    }
  }
});
