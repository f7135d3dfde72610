//! Segment broadcasts: `POST /v1/journeys/NAME/trigger` with a segment
//! enrols every stored customer in it, step by step, with progress at
//! `GET /v1/broadcasts/ID`; a SIGKILL mid-broadcast loses no member and
//! sends nothing twice; erasing customers while it runs leaves no trace
//! of them.

use super::harness::*;
use std::collections::BTreeMap;

const OFFERS: &str = r#"
customer {
  plan: "free" | "pro"?
}

segment pro = customer.plan == "pro"

message offer_mail email { subject "Offer {{ event.code }}" body "for you" }

journey offer {
  trigger api { code: string }
  entry once
  send offer_mail
}
"#;

/// Customers `user0000` … as identify calls, the even ones `pro`, in batches.
fn add_customers(daemon: &Daemon, count: usize) {
    let ids: Vec<usize> = (0..count).collect();
    for chunk in ids.chunks(500) {
        let calls: Vec<String> = chunk
            .iter()
            .map(|n| {
                let plan = if n % 2 == 0 { "pro" } else { "free" };
                format!(
                    r#"{{"type":"identify","userId":"{}","traits":{{"plan":"{plan}"}}}}"#,
                    id(*n)
                )
            })
            .collect();
        let response = daemon.post("/v1/batch", &format!(r#"{{"batch":[{}]}}"#, calls.join(",")));
        assert_eq!(response.status, 200, "{}", response.body);
    }
}

/// A customer id with letters outside hex, so the byte search for an
/// erased customer cannot match inside another customer's send id (a hex
/// digest: `c0024`'s offer id contains `c0031`).
fn id(n: usize) -> String {
    format!("user{n:04}")
}

fn start_broadcast(daemon: &Daemon, code: &str) -> String {
    let body = format!(r#"{{"segment":"pro","properties":{{"code":"{code}"}}}}"#);
    let response = daemon.post("/v1/journeys/offer/trigger", &body);
    assert_eq!(response.status, 202, "{}", response.body);
    let json = response.json();
    assert_eq!(json["success"], true);
    assert_eq!(json["state"], "running");
    json["broadcast"].as_str().expect("an id").to_string()
}

/// A daemon visiting `batch` customers a step, with `customers`
/// customers, and a broadcast of `code` to the pro ones just started.
fn broadcasting(batch: &str, customers: usize, code: &str) -> (Env, Daemon, String) {
    let env = Env::new(OFFERS);
    let daemon = env.start(&["--broadcast-batch", batch]);
    add_customers(&daemon, customers);
    let broadcast = start_broadcast(&daemon, code);
    (env, daemon, broadcast)
}

fn progress(daemon: &Daemon, broadcast: &str) -> serde_json::Value {
    let response = daemon.get(&format!("/v1/broadcasts/{broadcast}"));
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

fn finished(daemon: &Daemon, broadcast: &str) -> serde_json::Value {
    eventually("the broadcast to finish", || {
        let json = progress(daemon, broadcast);
        (json["state"] == "done").then_some(json)
    })
}

/// Offer sends in the sink: customer → how many.
fn offers(env: &Env) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in sink_lines(&env.sends()) {
        if line["kind"] == "send" && line["message"] == "offer_mail" {
            *counts
                .entry(line["customer"].as_str().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
    }
    counts
}

fn counts(json: &serde_json::Value) -> [u64; 4] {
    ["visited", "members", "enrolled", "skipped"].map(|name| json[name].as_u64().expect(name))
}

crate::on_both_stores!(a_broadcast_enrols_the_segment_once_and_reports_its_progress);
fn a_broadcast_enrols_the_segment_once_and_reports_its_progress(backend: Backend) {
    let env = Env::on(OFFERS, backend);
    let daemon = env.start(&["--broadcast-batch", "4"]);
    add_customers(&daemon, 30);

    // Refusals name the field, and nothing is started.
    let path = "/v1/journeys/offer/trigger";
    let unknown = daemon.post(path, r#"{"segment":"pr","properties":{"code":"A"}}"#);
    assert_eq!(unknown.status, 422, "{}", unknown.body);
    assert_eq!(unknown.json()["error"]["field"], "segment");
    assert!(unknown.body.contains("did you mean `pro`"), "{}", unknown.body);
    let untyped = daemon.post(path, r#"{"segment":"pro","properties":{"code":5}}"#);
    assert_eq!(untyped.status, 422, "{}", untyped.body);
    assert_eq!(untyped.json()["error"]["field"], "properties.code");
    let both = daemon.post(
        path,
        r#"{"segment":"pro","userId":"user0000","properties":{"code":"A"}}"#,
    );
    assert_eq!(both.status, 422, "{}", both.body);
    let anonymous = daemon.request_with("GET", "/v1/broadcasts", None, None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(daemon.get("/v1/broadcasts").json()["broadcasts"], serde_json::json!([]));
    assert_eq!(daemon.get("/v1/broadcasts/999").status, 404);
    assert_eq!(daemon.get("/v1/broadcasts/nope").status, 404);

    let first = start_broadcast(&daemon, "SPRING");
    let done = finished(&daemon, &first);
    assert_eq!(counts(&done), [30, 15, 15, 0], "{done}");
    assert_eq!(done["journey"], "offer");
    assert_eq!(done["segment"], "pro");
    assert_eq!(done["properties"], serde_json::json!({"code": "SPRING"}));
    assert!(done["finished_at"].is_string(), "{done}");
    let members: Vec<String> = (0..30).step_by(2).map(id).collect();
    let sent = eventually("the offers in the sink", || {
        let sent = offers(&env);
        (sent.len() == 15).then_some(sent)
    });
    assert_eq!(
        sent.keys().cloned().collect::<Vec<_>>(),
        members,
        "only the pro customers"
    );
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
    let subject = sink_lines(&env.sends())
        .into_iter()
        .find(|l| l["message"] == "offer_mail")
        .expect("an offer");
    assert_eq!(subject["subject"], "Offer SPRING", "the properties are event.*");

    // `entry once`: a second broadcast reaches the same members and enrols none.
    let second = start_broadcast(&daemon, "AGAIN");
    assert_ne!(first, second);
    let again = finished(&daemon, &second);
    assert_eq!(counts(&again), [30, 15, 0, 15], "{again}");
    let list = daemon.get("/v1/broadcasts").json();
    let ids: Vec<&str> = list["broadcasts"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|b| b["broadcast"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    let metrics = daemon.get("/metrics").body;
    assert!(metrics.contains("journeyc_broadcasts{state=\"done\"} 2"), "{metrics}");
    assert!(
        metrics.contains("journeyc_broadcast_customers{count=\"enrolled\"} 15"),
        "{metrics}"
    );
    // Intake went on meanwhile, and nothing more was sent.
    let ping = daemon.post("/v1/identify", r#"{"userId":"user0001","traits":{"plan":"pro"}}"#);
    assert_eq!(ping.status, 200, "{}", ping.body);
    assert_eq!(offers(&env).values().sum::<usize>(), 15);
    daemon.kill();
}

#[test]
fn a_broadcast_killed_midway_resumes_and_sends_each_member_exactly_once() {
    let customers = 1200;
    let (env, daemon, broadcast) = broadcasting("3", customers, "CRASH");
    eventually("the broadcast to be under way", || {
        let json = progress(&daemon, &broadcast);
        assert_eq!(
            json["state"], "running",
            "the broadcast should still be running: {json}"
        );
        (json["visited"].as_u64().unwrap_or(0) >= 30).then_some(())
    });
    daemon.kill();

    let daemon = env.start(&["--broadcast-batch", "50"]);
    let done = finished(&daemon, &broadcast);
    let half = customers as u64 / 2;
    assert_eq!(counts(&done), [customers as u64, half, half, 0], "{done}");
    let sent = eventually("every offer in the sink", || {
        let sent = offers(&env);
        (sent.len() == customers / 2).then_some(sent)
    });
    let members: Vec<String> = (0..customers).step_by(2).map(id).collect();
    assert_eq!(
        sent.keys().cloned().collect::<Vec<_>>(),
        members,
        "none missing, no free customer"
    );
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    daemon.kill();
}

#[test]
fn customers_erased_during_a_broadcast_leave_no_trace_and_the_rest_are_enrolled_once() {
    let customers = 400;
    let (env, daemon, broadcast) = broadcasting("1", customers, "ERASE");
    // Erase the customer the cursor names as often as we can catch it,
    // and one far ahead that the broadcast has not reached.
    let mut erased = vec![id(customers - 2)];
    let gone = daemon.request("DELETE", &format!("/v1/customers/{}", id(customers - 2)), None);
    assert_eq!(gone.status, 200, "{}", gone.body);
    for _ in 0..10 {
        let visited = progress(&daemon, &broadcast)["visited"].as_u64().unwrap_or(0) as usize;
        let last = id(visited.saturating_sub(1));
        if visited == 0 || erased.contains(&last) {
            continue;
        }
        let gone = daemon.request("DELETE", &format!("/v1/customers/{last}"), None);
        assert_eq!(gone.status, 200, "{}", gone.body);
        erased.push(last);
    }
    let done = finished(&daemon, &broadcast);
    let members: Vec<String> = (0..customers)
        .step_by(2)
        .map(id)
        .filter(|c| !erased.contains(c))
        .collect();
    // Erased members the broadcast reached before their erasure count too.
    let enrolled = done["enrolled"].as_u64().expect("enrolled") as usize;
    assert!(
        (members.len()..=members.len() + erased.len()).contains(&enrolled),
        "{done}"
    );
    for customer in &erased {
        assert_eq!(
            daemon.get(&format!("/v1/customers/{customer}")).status,
            404,
            "{customer} came back"
        );
    }
    let sent = eventually("the offers in the sink", || {
        let sent = offers(&env);
        (sent.len() >= members.len()).then_some(sent)
    });
    let expected: BTreeMap<String, usize> = members.iter().map(|c| (c.clone(), 1)).collect();
    // Offers sent before an erasure are redacted from the sink at the stop.
    assert_eq!(daemon.terminate(), Some(0));
    let sent_after: BTreeMap<String, usize> = offers(&env);
    assert_eq!(sent_after, expected, "before the stop: {sent:?}");
    // No byte of an erased customer in the data directory.
    for entry in walk(&env.data()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for customer in &erased {
            let found = bytes.windows(customer.len()).any(|w| w == customer.as_bytes());
            assert!(!found, "{customer} in {}", entry.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// With `--spread`, the owner's broadcast reaches the members of the other
/// node's partitions through their inbox, in the steps' own batches: every
/// member gets the offer once, from the node that holds its partition.
#[test]
fn a_broadcast_over_spread_nodes_reaches_every_member_once() {
    if super::pg::skip_requested() {
        return;
    }
    let env = Env::on(OFFERS, Backend::Postgres);
    let first = env.start(&["--broadcast-batch", "16", "--spread"]);
    let other = env.root.path().join("other");
    let mut args = env.store_args();
    args.extend(["--spread".to_string(), "--broadcast-batch".into(), "16".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let second = Daemon::start(&env.workspace(), &other, &args);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    eventually("two halves", || {
        (pg.psql(
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM (SELECT count(*) AS n FROM journeyc_leases \
             WHERE partition >= 0 AND expires_at >= now() GROUP BY owner) AS shares",
        )
        .trim()
            == "128,128")
            .then_some(())
    });
    add_customers(&first, 60);
    eventually("every customer stored", || {
        (0..60)
            .all(|n| second.get(&format!("/v1/customers/{}", id(n))).status == 200)
            .then_some(())
    });
    let broadcast = start_broadcast(&first, "SPREAD");
    let done = finished(&first, &broadcast);
    let [visited, members, ..] = counts(&done);
    assert_eq!([visited, members], [60, 30], "{done}");
    let expected: Vec<String> = (0..60).step_by(2).map(id).collect();
    let sent = eventually("every member's offer in one of the sinks", || {
        let mut sent: BTreeMap<String, usize> = offers(&env);
        for line in sink_lines(&other.join("sends.jsonl")) {
            if line["kind"] == "send" && line["message"] == "offer_mail" {
                *sent
                    .entry(line["customer"].as_str().unwrap_or("").to_string())
                    .or_insert(0) += 1;
            }
        }
        (sent.len() == expected.len()).then_some(sent)
    });
    assert_eq!(sent.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
    // Both nodes delivered some: the members are spread over their partitions.
    assert!(!offers(&env).is_empty(), "the owner's own members");
    assert!(
        sink_lines(&other.join("sends.jsonl"))
            .iter()
            .any(|l| l["message"] == "offer_mail"),
        "the other node's members"
    );
    assert_eq!(second.terminate(), Some(0));
    assert_eq!(first.terminate(), Some(0));
}
