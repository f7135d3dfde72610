#!/usr/bin/env python3
"""The pause an online erasure compaction (`journeyc serve --erasure-within`)
causes, in one run: N customers (an identify with an email and a track that
sends one email each, in /v1/batch calls of 500 customers), then the median latency of
single /v1/track calls (the baseline), then one customer is erased and
/v1/track calls are posted one after another until the compaction is logged.
Prints the daemon's pause (its log line), the compaction inside it, the
slowest call that waited through it, and that call as a ratio to the baseline.

    scripts/bench/erasure-pause.py [JOURNEYC_BINARY] [CUSTOMERS]
"""
import http.client, json, os, re, signal, statistics, subprocess, sys, tempfile, time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/journeyc"
customers = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
root = tempfile.mkdtemp(prefix="journeyc-erasure-pause-")
workspace, data = os.path.join(root, "ws"), os.path.join(root, "data")
os.makedirs(workspace)
with open(os.path.join(workspace, "main.journey"), "w") as f:
    f.write("""
customer {
  email: string?
}
event ping { n: int }
message hello email { subject "For {{ customer.email }}" body "Your code is {{ event.n }}" }
journey pinger {
  trigger ping
  entry always
  send hello
}
""")
log = open(os.path.join(root, "daemon.log"), "w")
daemon = subprocess.Popen(
    [binary, "serve", workspace, "--data", data, "--listen", "127.0.0.1:0", "--erasure-within", "2s"],
    stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, RUST_LOG="info"))
addr_file = os.path.join(data, "addr")
while not (os.path.exists(addr_file) and open(addr_file).read()):
    time.sleep(0.05)
host, port = open(addr_file).read().rsplit(":", 1)

def call(method, path, body=None):
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    started = time.perf_counter()
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 200, (path, response.status)
    return time.perf_counter() - started

for first in range(0, customers, 500):
    batch = []
    for i in range(first, min(first + 500, customers)):
        batch.append({"type": "identify", "userId": f"c{i}", "traits": {"email": f"c{i}@example.org"}})
        batch.append({"type": "track", "userId": f"c{i}", "event": "ping", "properties": {"n": i}})
    call("POST", "/v1/batch", {"batch": batch})
ping = lambda i: {"userId": "c0", "event": "ping", "properties": {"n": i}, "messageId": f"m{i}"}
baseline = statistics.median(call("POST", "/v1/track", ping(i)) for i in range(200))
call("DELETE", "/v1/customers/c1")
waited, i = [], 1000
while "online erasure compaction done" not in open(os.path.join(root, "daemon.log")).read():
    waited.append(call("POST", "/v1/track", ping(i)))
    i += 1
text = open(os.path.join(root, "daemon.log")).read()
field = lambda message, name: int(re.search(
    rf"{message}.*\b{name}=(\d+)", next(l for l in text.splitlines() if message in l)).group(1))
pause_ms = field("online erasure compaction done", "pause_ms")
compaction_ms = field("erasure: sinks redacted and store compacted", "ms")
daemon.send_signal(signal.SIGTERM)
daemon.wait()
slowest = max(waited)
print(f"customers {customers}: pause {pause_ms} ms (compaction {compaction_ms} ms); "
      f"slowest /v1/track through it {slowest * 1000:.0f} ms; baseline median {baseline * 1000:.1f} ms; "
      f"ratio {slowest / baseline:.0f}x; calls during the wait {len(waited)}")
