// The journeyc dashboard: the read-only aggregates of this daemon, drawn.
// Every text from the workspace goes in through textContent, never as HTML.
"use strict";

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const graphs = new Map(); // "name@version" -> graph
let selected = decodeURIComponent(location.hash.slice(1)) || null;
// A static report (`journeyc simulate --report`) carries its answers.
const embedded = document.getElementById("data");
const EMBEDDED = embedded ? JSON.parse(embedded.textContent) : null;

function element(tag, attributes = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgElement(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJSON(path) {
  if (EMBEDDED) {
    if (!(path in EMBEDDED)) throw new Error(`${path}: not in the report`);
    return EMBEDDED[path];
  }
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

const number = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"));
const percent = (r) => (r === undefined || r === null ? "–" : `${(r * 100).toFixed(1)}%`);
const interval = (ci) => (ci ? `${percent(ci[0])} – ${percent(ci[1])}` : "–");
const short = (hash) => (hash || "").slice(0, 10);

function row(cells, numeric = []) {
  const tr = element("tr");
  cells.forEach((cell, index) => {
    const td = element("td", numeric.includes(index) ? { class: "n" } : {});
    if (cell instanceof Node) td.appendChild(cell);
    else td.textContent = cell;
    tr.appendChild(td);
  });
  return tr;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function sumValues(object) {
  return Object.values(object || {}).reduce((a, b) => a + b, 0);
}

function renderOverview(list, readouts) {
  const rows = list.journeys.map((journey, index) => {
    const readout = readouts[index];
    const versions = (journey.versions || [])
      .map((v) => `${short(v.version)}: ${v.active}${v.current ? " (current)" : ""}`)
      .join(", ");
    const tr = row(
      [journey.name, journey.trigger, number(readout.entered), number(readout.active),
        number(readout.converted), percent(readout.rate), versions || "–"],
      [2, 3, 4, 5],
    );
    tr.classList.add("pick");
    if (journey.name === selected) tr.classList.add("selected");
    tr.dataset.journey = journey.name;
    tr.addEventListener("click", () => {
      location.hash = encodeURIComponent(journey.name);
    });
    return tr;
  });
  fill("journeys", rows);
}

// What a node of the flow chart shows, from the readout.
function countsFor(node, readout) {
  const lines = [];
  if (node.shape === "start") {
    lines.push(`entered ${number(readout.entered)} · active ${number(readout.active)}`);
    return lines;
  }
  if (node.pc === undefined) return lines;
  const step = (readout.steps || []).find((s) => s.pc === node.pc);
  if (!step) return lines;
  if (step.kind === "send" && step.name && readout.messages[step.name]) {
    const m = readout.messages[step.name];
    const skipped = sumValues(m.skipped);
    lines.push(`sent ${number(m.sent)} · skipped ${number(skipped)}`);
    if (m.opened !== undefined && m.sent > 0) {
      lines.push(`opened ${percent(m.opened / m.sent)} · clicked ${percent((m.clicked || 0) / m.sent)}`);
    }
  }
  if (step.reached !== undefined) lines.push(`reached ${number(step.reached)}`);
  if (["wait", "wait_until", "wait_for"].includes(step.kind) || step.waiting > 0) {
    lines.push(`waiting ${number(step.waiting)}`);
  }
  if (step.kind === "end" && readout.exits) lines.push(`ended ${number(readout.exits.end || 0)}`);
  if (step.kind === "exit" && readout.exits) lines.push(`exited ${number(readout.exits.exit_statement || 0)}`);
  return lines;
}

// Layered layout: each node's rank is its distance from the start; nodes of
// a rank side by side; edges back up the chart go round the right.
function drawChart(graph, readout) {
  const nodes = graph.nodes;
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const rank = new Map();
  const start = nodes.find((n) => n.shape === "start");
  if (start) {
    rank.set(start.id, 0);
    const queue = [start.id];
    while (queue.length) {
      const id = queue.shift();
      for (const edge of graph.edges) {
        if (edge.from === id && !rank.has(edge.to)) {
          rank.set(edge.to, rank.get(id) + 1);
          queue.push(edge.to);
        }
      }
    }
  }
  for (const n of nodes) if (!rank.has(n.id)) rank.set(n.id, 0);
  const ranks = [];
  for (const n of nodes) {
    const r = rank.get(n.id);
    (ranks[r] = ranks[r] || []).push(n);
  }
  // One width for every box: the longest line (about 7 px a character at 12 px).
  const longest = Math.max(...nodes.map((n) => Math.max(...n.lines.map((l) => l.length), 0)), 24);
  const width = Math.min(Math.max(longest * 7 + 24, 200), 440);
  const gapX = 40, gapY = 46, lineHeight = 16, pad = 10;
  const boxes = new Map();
  let y = 20;
  const columns = Math.max(...ranks.map((r) => (r ? r.length : 0)), 1);
  const totalWidth = columns * width + (columns - 1) * gapX + 140;
  for (const group of ranks) {
    if (!group) continue;
    let height = 0;
    const rowWidth = group.length * width + (group.length - 1) * gapX;
    let x = (totalWidth - 140 - rowWidth) / 2 + 20;
    for (const node of group) {
      const counts = countsFor(node, readout);
      const h = pad * 2 + (node.lines.length + counts.length) * lineHeight;
      boxes.set(node.id, { x, y, w: width, h, counts });
      height = Math.max(height, h);
      x += width + gapX;
    }
    y += height + gapY;
  }
  const svg = svgElement("svg", { width: totalWidth, height: y, viewBox: `0 0 ${totalWidth} ${y}`, role: "img" });
  svg.appendChild(svgElement("title", {}, `flow chart of ${readout.journey}`));
  const edges = svgElement("g");
  let detour = 0;
  for (const edge of graph.edges) {
    const a = boxes.get(edge.from), b = boxes.get(edge.to);
    if (!a || !b) continue;
    let d, lx, ly;
    if (b.y > a.y) {
      const x1 = a.x + a.w / 2, y1 = a.y + a.h, x2 = b.x + b.w / 2, y2 = b.y;
      const mid = (y1 + y2) / 2;
      d = `M${x1},${y1} C${x1},${mid} ${x2},${mid} ${x2},${y2 - 4}`;
      lx = (x1 + x2) / 2 + 4; ly = mid;
    } else {
      detour += 12;
      const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x + b.w, y2 = b.y + b.h / 2;
      const side = Math.max(x1, x2) + 20 + detour;
      d = `M${x1},${y1} L${side},${y1} L${side},${y2} L${x2 + 4},${y2}`;
      lx = side + 4; ly = (y1 + y2) / 2;
    }
    edges.appendChild(svgElement("path", { d, class: edge.dotted ? "edge dotted" : "edge", "marker-end": "url(#arrow)" }));
    if (edge.label) edges.appendChild(svgElement("text", { x: lx, y: ly, class: "edge-label" }, edge.label));
  }
  const defs = svgElement("defs");
  const marker = svgElement("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 6, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.appendChild(svgElement("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8a94a6" }));
  defs.appendChild(marker);
  svg.appendChild(defs);
  svg.appendChild(edges);
  for (const node of nodes) {
    const box = boxes.get(node.id);
    const g = svgElement("g", { class: `node ${node.shape}`, "data-id": node.id });
    if (node.pc !== undefined) g.setAttribute("data-pc", node.pc);
    g.appendChild(svgElement("rect", { x: box.x, y: box.y, width: box.w, height: box.h, rx: node.shape === "decision" ? 14 : 6 }));
    let ty = box.y + pad + 12;
    for (const line of node.lines) {
      g.appendChild(svgElement("text", { x: box.x + pad, y: ty }, line));
      ty += lineHeight;
    }
    for (const line of box.counts) {
      g.appendChild(svgElement("text", { x: box.x + pad, y: ty, class: "count" }, line));
      ty += lineHeight;
    }
    svg.appendChild(g);
  }
  document.getElementById("chart").replaceChildren(svg);
}

function renderDetail(journey, readout, graph) {
  document.getElementById("detail").hidden = false;
  document.getElementById("title").textContent = `${journey.name} · version ${short(readout.version)}`;
  drawChart(graph, readout);
  fill("messages", Object.entries(readout.messages || {}).map(([name, m]) => {
    const reasons = Object.entries(m.skipped || {}).map(([reason, n]) => `${reason} ${n}`).join(", ") || "0";
    const skipped = m.skipped_customers ? `${reasons} (${number(m.skipped_customers)} customers)` : reasons;
    return row([name, number(m.sent), skipped, number(m.delivered), number(m.opened), number(m.clicked),
      number(m.bounced), number(m.complained), number(m.unsubscribed)], [1, 3, 4, 5, 6, 7, 8]);
  }));
  const groups = [];
  for (const [split, arms] of Object.entries(readout.splits || {})) {
    for (const [arm, g] of Object.entries(arms)) {
      groups.push(row([`split ${split}: ${arm}`, number(g.entered), number(g.converted), percent(g.rate), interval(g.ci95)], [1, 2, 3]));
    }
  }
  const holdout = readout.holdout;
  if (holdout) {
    for (const [name, g] of [["holdout: control", holdout.control], ["holdout: treatment", holdout.treatment]]) {
      groups.push(row([name, number(g.entered), number(g.converted), percent(g.rate), interval(g.ci95)], [1, 2, 3]));
    }
  }
  fill("groups", groups);
  document.getElementById("experiments").hidden = groups.length === 0;
  document.getElementById("lift").textContent = holdout
    ? `lift ${percent(holdout.lift)} (95% interval ${interval(holdout.ci95)})`
    : "";
  fill("versions", (readout.versions || []).map((v) =>
    row([short(v.version), number(v.active), v.current ? "current" : "pinned"], [1])));
}

async function refresh() {
  try {
    const list = await getJSON("/v1/journeys");
    const readouts = await Promise.all(
      list.journeys.map((j) => getJSON(`/v1/journeys/${encodeURIComponent(j.name)}/stats`)),
    );
    if (!selected || !list.journeys.some((j) => j.name === selected)) {
      selected = list.journeys.length ? list.journeys[0].name : null;
    }
    document.getElementById("bundle").textContent = `workspace ${short(list.bundle)}`;
    renderOverview(list, readouts);
    const index = list.journeys.findIndex((j) => j.name === selected);
    if (index >= 0) {
      const journey = list.journeys[index];
      const key = `${journey.name}@${journey.version}`;
      if (!graphs.has(key)) graphs.set(key, await getJSON(`/v1/journeys/${encodeURIComponent(journey.name)}/graph`));
      renderDetail(journey, readouts[index], graphs.get(key));
    }
    document.getElementById("updated").textContent = EMBEDDED
      ? "a simulation (journeyc simulate --report)"
      : `updated ${new Date().toLocaleTimeString()}`;
    document.getElementById("error").hidden = true;
    document.body.dataset.loaded = "true";
  } catch (error) {
    const box = document.getElementById("error");
    box.textContent = `cannot load: ${error.message}`;
    box.hidden = false;
  }
}

window.addEventListener("hashchange", () => {
  selected = decodeURIComponent(location.hash.slice(1)) || null;
  refresh();
});
refresh();
if (!EMBEDDED) setInterval(refresh, REFRESH_MS);
