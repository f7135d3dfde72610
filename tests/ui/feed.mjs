// Posts a JSONL file of Segment calls to /v1/batch, 100 calls a request,
// then waits until the stats settle (timers already due have fired).
//   node feed.mjs http://ADDR TOKEN FILE
import { readFileSync } from "node:fs";

const [base, token, file] = process.argv.slice(2);
const calls = readFileSync(file, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
let accepted = 0;
for (let i = 0; i < calls.length; i += 100) {
  const response = await fetch(`${base}/v1/batch`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ batch: calls.slice(i, i + 100) }),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(`batch ${i}: ${response.status} ${JSON.stringify(answer)}`);
  accepted += answer.accepted;
}
console.log(`fed ${accepted} of ${calls.length} calls`);

// Settled: two readings of every journey's stats, a second apart, agree.
const reading = async () => {
  const headers = { Authorization: `Bearer ${token}` };
  const list = await (await fetch(`${base}/v1/journeys`, { headers })).json();
  const all = [];
  for (const j of list.journeys) {
    all.push(await (await fetch(`${base}/v1/journeys/${encodeURIComponent(j.name)}/stats`, { headers })).json());
  }
  return JSON.stringify(all);
};
let last = await reading();
for (let attempt = 0; ; attempt++) {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const now = await reading();
  if (now === last) break;
  if (attempt > 90) throw new Error("the stats did not settle within 90 s");
  last = now;
}
console.log("stats settled");
