// The dashboard in a real browser: Debian's Chromium, driven headless by
// playwright-core, against a daemon started by scripts/checks.d/60-ui.sh.
//
//   node dashboard.mjs http://ADDR TOKEN OUT_DIR [--protected]
//   node dashboard.mjs file:///…/report.html SUMMARY.json OUT_DIR --report
//
// It asserts that the page shows every journey with the counts the stats
// API gives, draws the selected journey's flow chart with its send counts,
// fits a phone's width, and (with --protected) asks for the token. With
// --report, the page is `journeyc simulate --report`'s file, checked
// against `journeyc simulate --summary --format json` of the same run.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";

const [base, token, out, mode] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const auth = { Authorization: `Bearer ${token}` };
const api = async (path) => {
  const response = await fetch(base + path, { headers: auth });
  assert.equal(response.status, 200, `${path}: ${response.status}`);
  return response.json();
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  if (mode === "--protected") {
    const open = await fetch(`${base}/ui`);
    assert.equal(open.status, 401, "the dashboard needs the token with --protect-ui");
    assert.match(open.headers.get("www-authenticate") || "", /Basic/);
    assert.equal((await fetch(`${base}/v1/journeys`)).status, 401);
    // A browser asks for the token as the user name (Basic auth), then the page works.
    const context = await browser.newContext({ httpCredentials: { username: token, password: "" } });
    const page = await context.newPage();
    await page.goto(`${base}/ui`);
    await page.waitForSelector("body[data-loaded=true]", { timeout: 30000 });
    const names = await page.$$eval("#journeys tbody tr", (rows) => rows.map((r) => r.dataset.journey));
    assert.ok(names.length > 0, "journeys listed behind the token");
    console.log(`protected dashboard: ${names.length} journeys behind the token`);
  } else {
    const report = mode === "--report";
    const list = { journeys: [] };
    const stats = new Map();
    if (report) {
      const summary = JSON.parse(readFileSync(token, "utf8"));
      for (const readout of summary.journeys) {
        list.journeys.push({ name: readout.journey });
        stats.set(readout.journey, readout);
      }
    } else {
      list.journeys = (await api("/v1/journeys")).journeys;
      for (const j of list.journeys) stats.set(j.name, await api(`/v1/journeys/${encodeURIComponent(j.name)}/stats`));
      // Aggregates need no token by default; customer data does.
      assert.equal((await fetch(`${base}/v1/journeys`)).status, 200);
      assert.equal((await fetch(`${base}/v1/customers/nobody`)).status, 401);
    }
    const shot = report ? "report" : "dashboard";

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(report ? base : `${base}/ui`);
    await page.waitForSelector("body[data-loaded=true]", { timeout: 30000 });

    // Every journey, with the stats API's entered and active counts.
    const rows = await page.$$eval("#journeys tbody tr", (trs) =>
      trs.map((tr) => ({ name: tr.dataset.journey, cells: [...tr.children].map((td) => td.textContent) })));
    assert.deepEqual(rows.map((r) => r.name), list.journeys.map((j) => j.name));
    for (const r of rows) {
      const s = stats.get(r.name);
      assert.equal(r.cells[2], s.entered.toLocaleString("en-US"), `${r.name} entered`);
      assert.equal(r.cells[3], s.active.toLocaleString("en-US"), `${r.name} active`);
    }
    // The busiest journey: its flow chart, a send step with the API's count.
    const busiest = [...stats.values()].sort((a, b) => b.entered - a.entered)[0];
    assert.ok(busiest.entered > 0, "the events enrolled someone");
    await page.click(`#journeys tbody tr[data-journey="${busiest.journey}"]`);
    await page.waitForFunction((name) => document.getElementById("title").textContent.startsWith(name), busiest.journey);
    const title = await page.textContent("#title");
    assert.ok(title.startsWith(busiest.journey), title);
    const start = await page.textContent("#chart g.start");
    assert.ok(start.includes(`entered ${busiest.entered.toLocaleString("en-US")}`), start);
    const sendStep = busiest.steps.find((s) => s.kind === "send");
    assert.ok(sendStep, "the journey sends");
    const node = await page.textContent(`#chart g[data-pc="${sendStep.pc}"]`);
    const sent = busiest.messages[sendStep.name].sent;
    assert.ok(node.includes(`send ${sendStep.name}`) && node.includes(`sent ${sent.toLocaleString("en-US")}`), node);
    assert.ok(node.includes(`reached ${sendStep.reached.toLocaleString("en-US")}`), node);
    // The messages table has the same numbers.
    const messageRows = await page.$$eval("#messages tbody tr", (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    for (const [name, m] of Object.entries(busiest.messages)) {
      const found = messageRows.find((cells) => cells[0] === name);
      assert.ok(found, `message ${name} listed`);
      assert.equal(found[1], m.sent.toLocaleString("en-US"), `message ${name} sent`);
    }
    const nodes = await page.$$eval("#chart g.node", (gs) => gs.length);
    assert.ok(nodes >= busiest.steps.length, `${nodes} nodes for ${busiest.steps.length} steps`);
    await page.screenshot({ path: `${out}/${shot}.png`, fullPage: true });

    // A phone: the page does not overflow sideways (wide tables scroll inside).
    await page.setViewportSize({ width: 390, height: 844 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `the page is ${overflow}px wider than a phone`);
    await page.screenshot({ path: `${out}/${shot}-phone.png`, fullPage: false });
    assert.deepEqual(errors, [], "no script errors");
    console.log(`${shot}: ${rows.length} journeys; ${busiest.journey} entered ${busiest.entered}, ` +
      `${sendStep.name} sent ${sent}; screenshots in ${out}`);
  }
} finally {
  await browser.close();
}
