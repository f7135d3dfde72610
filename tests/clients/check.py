"""Drives Segment's Python library, RudderStack's Python SDK and (through
send.mjs) Segment's Node library against a running `journeyc serve`, then
asserts on the daemon's state over HTTP.

    python3 check.py URL TOKEN WORKSPACE_FILE

Each library: identify with camelCase traits, a Title Case track event, a
page call in a batch (gzip on), an anonymous visitor identified later, and
one undeclared event in a batch whose other calls must land and whose bad
call must be listed in /v1/rejected and be replayable after a schema fix.
"""

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import rudderstack.analytics as rudder
import segment.analytics as segment

URL, TOKEN, WORKSPACE = sys.argv[1], sys.argv[2], Path(sys.argv[3])
AUTH = "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method, headers={"Authorization": AUTH})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def customer(id):
    status, body = call("GET", f"/v1/customers/{id}")
    return body if status == 200 else None


def expect(what, condition):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def eventually(what, check):
    deadline = time.time() + 20
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    sys.exit(f"FAILED (timed out): {what}")


errors = []

# Segment's Python library: queued calls go out as one /v1/batch, gzipped.
segment.write_key = TOKEN
segment.host = URL
segment.gzip = True
segment.on_error = lambda error, items: errors.append(("segment", error))
segment.identify("py-u1", {"firstName": "Ada", "planTier": "pro"})
segment.track("py-u1", "Order Completed", {"orderId": "p-1", "revenue": 42.5})
segment.page("py-u1", "Docs", "Pricing", {"url": "/pricing"})
segment.track(anonymous_id="py-anon", event="Order Completed", properties={"orderId": "p-2", "revenue": 5})
segment.identify("py-u2", {"firstName": "Bea"}, anonymous_id="py-anon")
segment.track("py-u1", "Order Refunded", {"orderId": "p-1"})
segment.flush()
segment.shutdown()

# RudderStack's Python SDK, with its defaults (gzip on; identify traits in context.traits).
rudder.write_key = TOKEN
rudder.dataPlaneUrl = URL
rudder.on_error = lambda error, items: errors.append(("rudder", error))
rudder.identify("rs-u1", {"firstName": "Rhea", "planTier": "free"})
rudder.track("rs-u1", "Order Completed", {"orderId": "r-1", "revenue": 7})
rudder.page("rs-u1", "Docs", "Pricing", {"url": "/pricing"})
rudder.track(anonymous_id="rs-anon", event="Order Completed", properties={"orderId": "r-2", "revenue": 1})
rudder.identify("rs-u2", {"firstName": "Ravi"}, anonymous_id="rs-anon")
rudder.track("rs-u1", "Order Refunded", {"orderId": "r-1"})
rudder.flush()
rudder.shutdown()

# Segment's Node library.
subprocess.run(["node", str(Path(__file__).with_name("send.mjs")), URL, TOKEN], check=True)

if errors:
    print(errors)
expect("no library reported an error", not errors)

for prefix, first_name, plan in [("py", "Ada", "pro"), ("rs", "Rhea", "free"), ("node", "Nia", "pro")]:
    u1 = eventually(f"{prefix}-u1 stored", lambda: customer(f"{prefix}-u1"))
    expect(f"{prefix}: camelCase traits land under their identifiers", u1["profile"].get("first_name") == first_name)
    expect(f"{prefix}: planTier → plan", u1["profile"].get("plan") == plan)
    expect(f"{prefix}: the Title Case event landed", u1["last_event"] is not None)
    u2 = customer(f"{prefix}-u2")
    expect(f"{prefix}: the visitor identified later has a profile", u2 is not None and "first_name" in u2["profile"])
    anonymous = customer(f"{prefix}-anon")
    expect(f"{prefix}: the anonymous visitor was merged into the user",
           anonymous is not None and anonymous["id"] == f"{prefix}-u2" and f"{prefix}-anon" in u2["aliases"])

sends = eventually("receipts sent", lambda: [
    line for line in map(json.loads, Path(WORKSPACE.parent.parent / "data" / "sends.jsonl").read_text().splitlines())
    if line.get("kind") == "send"
] if (WORKSPACE.parent.parent / "data" / "sends.jsonl").exists() else None)
subjects = {line["subject"] for line in sends}
expect("templates use identifiers: receipts thank each customer by name", {"Thanks Ada", "Thanks Rhea", "Thanks Nia"} <= subjects)

status, rejected = call("GET", "/v1/rejected")
expect("GET /v1/rejected answers", status == 200)
refused = [r for r in rejected["rejected"] if r.get("call", {}).get("event") == "Order Refunded"]
expect("each library's undeclared event is listed", sorted(r["customer"] for r in refused) == ["node-u1", "py-u1", "rs-u1"])
expect("each was refused inside a batch", all(r["endpoint"] == "batch" and r["field"] == "event" for r in refused))

# The schema fix, a reload and a replay recover them.
WORKSPACE.write_text(WORKSPACE.read_text() + '\nevent order_refunded "Order Refunded" { order_id "orderId": string }\n')
status, _ = call("POST", "/v1/reload")
expect("the fixed workspace reloads", status == 200)
status, replay = call("POST", "/v1/rejected/replay")
expect("the replay ingests the three refused calls", status == 200 and replay["replayed"] == 3)
status, rejected = call("GET", "/v1/rejected")
expect("nothing is left to replay", not [r for r in rejected["rejected"] if r.get("call", {}).get("event") == "Order Refunded"])
print("all client checks passed")
