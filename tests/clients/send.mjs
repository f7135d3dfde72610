// Segment's Node library (@segment/analytics-node) against journeyc serve:
// node send.mjs URL TOKEN
import { Analytics } from "@segment/analytics-node";

const [host, writeKey] = process.argv.slice(2);
const analytics = new Analytics({ writeKey, host, flushAt: 20, flushInterval: 200 });
const failures = [];
analytics.on("error", (error) => failures.push(error));

analytics.identify({ userId: "node-u1", traits: { firstName: "Nia", planTier: "pro" } });
analytics.track({ userId: "node-u1", event: "Order Completed", properties: { orderId: "n-1", revenue: 12.5 } });
analytics.page({ userId: "node-u1", name: "Pricing", properties: { url: "/pricing" } });
// An anonymous visitor, identified later.
analytics.track({ anonymousId: "node-anon", event: "Order Completed", properties: { orderId: "n-2", revenue: 3 } });
analytics.identify({ userId: "node-u2", anonymousId: "node-anon", traits: { firstName: "Noor" } });
// Not declared: refused on its own, the others land.
analytics.track({ userId: "node-u1", event: "Order Refunded", properties: { orderId: "n-1" } });
await analytics.closeAndFlush({ timeout: 10000 });
if (failures.length > 0) {
  console.error("analytics-node reported errors:", failures);
  process.exit(1);
}
