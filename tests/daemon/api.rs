//! The HTTP API: auth, every class of bad input, erasure, stats, metrics.

use super::harness::*;
use base64::Engine as _;

#[test]
fn auth_is_required_except_for_healthz() {
    let env = Env::new(WORKSPACE);
    let daemon = env.start(&[]);
    let body = ping("a1", "m1", 1);
    assert_eq!(daemon.request_with("POST", "/v1/track", Some(&body), None).status, 401);
    assert_eq!(
        daemon
            .request_with("POST", "/v1/track", Some(&body), Some("Bearer wrong"))
            .status,
        401
    );
    // The read-only aggregates are open, unless `--protect-ui`.
    for open in [
        "/v1/journeys",
        "/v1/journeys/pinger/stats",
        "/v1/journeys/pinger/graph",
        "/metrics",
        "/ui",
    ] {
        assert_eq!(daemon.request_with("GET", open, None, None).status, 200, "{open}");
    }
    assert_eq!(daemon.request_with("GET", "/v1/rejected", None, None).status, 401);
    let unauthorized = daemon.request_with("GET", "/v1/customers/a1", None, None);
    assert_eq!(unauthorized.json()["error"]["field"], "authorization");
    assert_eq!(daemon.request_with("GET", "/healthz", None, None).status, 200);
    // Segment-style Basic auth: the token is the user name.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN}:"));
    let response = daemon.request_with("POST", "/v1/track", Some(&body), Some(&format!("Basic {basic}")));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(daemon.post("/v1/track", &ping("a2", "m2", 1)).status, 200);
    daemon.terminate();

    let protected = env.start(&["--protect-ui"]);
    for closed in [
        "/v1/journeys",
        "/v1/journeys/pinger/stats",
        "/metrics",
        "/ui",
        "/ui/app.js",
    ] {
        assert_eq!(
            protected.request_with("GET", closed, None, None).status,
            401,
            "{closed}"
        );
        assert_eq!(protected.get(closed).status, 200, "{closed}");
    }
    assert_eq!(protected.request_with("GET", "/healthz", None, None).status, 200);
}

/// The stats of a journey without the token: aggregates only, no samples
/// of dead letters (they hold customer data); the graph is the compiled
/// program's flow chart.
#[test]
fn aggregates_without_the_token_hold_no_customer_data() {
    let env = Env::new(WORKSPACE);
    let daemon = env.start(&[]);
    let open = daemon
        .request_with("GET", "/v1/journeys/delayed/stats", None, None)
        .json();
    assert!(open.get("dead_letters").is_some(), "{open}");
    assert!(open.get("dead_letter_samples").is_none(), "{open}");
    assert!(daemon
        .get("/v1/journeys/delayed/stats")
        .json()
        .get("dead_letter_samples")
        .is_some());
    let graph = daemon
        .request_with("GET", "/v1/journeys/delayed/graph", None, None)
        .json();
    let lines: Vec<String> = graph["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["lines"][0].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(lines[0], "trigger bought");
    assert!(lines.contains(&"pause:".to_string()), "{lines:?}");
    assert!(graph["edges"].as_array().is_some_and(|e| !e.is_empty()), "{graph}");
    let page = daemon.request_with("GET", "/ui", None, None);
    assert!(page.body.contains("<script src=\"/ui/app.js\""), "{}", page.body);
    assert_eq!(daemon.request_with("GET", "/ui/nothing.js", None, None).status, 404);
    daemon.terminate();
}

crate::on_both_stores!(invalid_input_is_refused_with_field_and_reason_and_nothing_is_stored);
fn invalid_input_is_refused_with_field_and_reason_and_nothing_is_stored(backend: Backend) {
    let env = Env::on(WORKSPACE, backend);
    let daemon = env.start(&[]);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/track", "{\"userId\":".to_string(), 400, ""),
        (
            "/v1/track",
            r#"{"userId":"b1","event":"nope","properties":{}}"#.into(),
            422,
            "event",
        ),
        (
            "/v1/track",
            r#"{"userId":"b1","event":"ping","properties":{"n":"x"}}"#.into(),
            422,
            "properties.n",
        ),
        (
            "/v1/track",
            r#"{"userId":"b1","event":"ping","properties":{}}"#.into(),
            422,
            "properties.n",
        ),
        (
            "/v1/track",
            r#"{"userId":"b1","event":"ping","properties":{"n":1,"extra":2}}"#.into(),
            422,
            "properties.extra",
        ),
        (
            "/v1/identify",
            r#"{"userId":"b1","traits":{"plan":"gold"}}"#.into(),
            422,
            "traits.plan",
        ),
        (
            "/v1/identify",
            r#"{"userId":"b1","traits":{"unknown":1}}"#.into(),
            422,
            "traits.unknown",
        ),
        (
            "/v1/track",
            r#"{"event":"ping","properties":{"n":1}}"#.into(),
            422,
            "userId",
        ),
        (
            "/v1/track",
            r#"{"userId":"b1","event":"ping","properties":{"n":1},"timestamp":"yesterday"}"#.into(),
            422,
            "timestamp",
        ),
        ("/v1/identify", r#"{"type":"track","userId":"b1"}"#.into(), 422, "type"),
        ("/v1/batch", r#"{"events":[]}"#.into(), 400, "batch"),
        // A batch whose calls are all invalid: the first bad call is named.
        (
            "/v1/batch",
            r#"{"batch":[{"type":"track","userId":"b2","event":"ping","properties":{"n":true}}]}"#.into(),
            422,
            "batch[0].properties.n",
        ),
    ];
    for (path, body, status, field) in &cases {
        let response = daemon.post(path, body);
        assert_eq!(response.status, *status, "{path} {body}: {}", response.body);
        let json = response.json();
        assert_eq!(json["error"]["field"], *field, "{body}: {}", response.body);
        assert!(
            json["error"]["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{}",
            response.body
        );
    }
    // Too large: a body over 512 KiB, and a batch over 1000 events.
    let big = format!(
        r#"{{"userId":"b1","event":"ping","properties":{{"n":1}},"pad":"{}"}}"#,
        "x".repeat(600 * 1024)
    );
    let response = daemon.post("/v1/track", &big);
    assert_eq!(response.status, 413, "{}", response.body);
    assert_eq!(response.json()["error"]["field"], "body");
    let many: Vec<String> = (0..1001).map(|i| ping("b1", &format!("x{i}"), 1)).collect();
    let response = daemon.post("/v1/batch", &format!("{{\"batch\":[{}]}}", many.join(",")));
    assert_eq!(response.status, 413, "{}", response.body);
    // Nothing of any refused request was stored.
    assert_eq!(daemon.get("/v1/customers/b1").status, 404);
    assert_eq!(daemon.get("/v1/customers/b2").status, 404);
    let metrics = daemon.get("/metrics").body;
    assert!(metrics.contains("journeyc_events_accepted_total 0"), "{metrics}");
    assert!(!metrics.contains("journeyc_events_rejected_total 0"), "{metrics}");
}

crate::on_both_stores!(customers_journeys_stats_erasure_and_metrics);
fn customers_journeys_stats_erasure_and_metrics(backend: Backend) {
    let env = Env::on(WORKSPACE, backend);
    let daemon = env.start(&[]);
    let identify = r#"{"userId":"c1","traits":{"plan":"pro"},"messageId":"i1"}"#;
    assert_eq!(daemon.post("/v1/identify", identify).status, 200);
    let batch = format!(
        "{{\"batch\":[{},{},{}]}}",
        ping("c1", "p1", 1),
        ping("c2", "p2", 2),
        // A repeated messageId is ignored.
        ping("c2", "p2", 2)
    );
    let response = daemon.post("/v1/batch", &batch);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        daemon
            .post(
                "/v1/track",
                r#"{"userId":"c3","event":"bought","properties":{"amount":9.5},"messageId":"b1"}"#
            )
            .status,
        200
    );

    let customer = daemon.get("/v1/customers/c1");
    assert_eq!(customer.status, 200, "{}", customer.body);
    assert_eq!(customer.json()["profile"]["plan"], "pro");
    // c3 waits 2s in `delayed`: an active enrollment with a next wake-up.
    let waiting = daemon.get("/v1/customers/c3").json();
    let enrollment = &waiting["enrollments"][0];
    assert_eq!(enrollment["journey"], "delayed");
    assert!(enrollment["next_wake"].is_string(), "{waiting}");
    assert_eq!(enrollment["label"], "pause");

    let journeys = daemon.get("/v1/journeys").json();
    let names: Vec<&str> = journeys["journeys"]
        .as_array()
        .expect("journeys")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(names, vec!["delayed", "pinger"]);
    assert!(journeys["journeys"][0]["version"]
        .as_str()
        .is_some_and(|v| v.len() == 64));

    let stats = daemon.get("/v1/journeys/pinger/stats").json();
    assert_eq!(stats["entered"], 2, "{stats}");
    assert_eq!(stats["messages"]["hello"]["sent"], 2, "{stats}");
    assert_eq!(stats["active"], 0, "{stats}");
    assert_eq!(stats["exits"]["end"], 2, "{stats}");
    let delayed = daemon.get("/v1/journeys/delayed/stats").json();
    assert_eq!(delayed["active"], 1, "{delayed}");
    let waiting: Vec<&serde_json::Value> = delayed["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|step| step["waiting"] == 1)
        .collect();
    assert_eq!(waiting.len(), 1, "{delayed}");
    assert_eq!(waiting[0]["label"], "pause", "{delayed}");
    assert_eq!(waiting[0]["kind"], "wait", "{delayed}");
    assert_eq!(daemon.get("/v1/journeys/nope/stats").status, 404);

    // Sends reach the sink with ids.
    let lines = eventually("two pinger sends", || {
        let lines = sink_lines(&env.sends());
        let sends = lines
            .iter()
            .filter(|l| l["kind"] == "send" && l["journey"] == "pinger")
            .count();
        (sends == 2).then_some(lines)
    });
    assert!(lines.iter().all(|l| l["seq"].is_u64()));

    // Erasure: gone from the API, timers included; a second delete is 404.
    let erased = daemon.request("DELETE", "/v1/customers/c3", None);
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(daemon.get("/v1/customers/c3").status, 404);
    assert_eq!(daemon.request("DELETE", "/v1/customers/c3", None).status, 404);
    let delayed = daemon.get("/v1/journeys/delayed/stats").json();
    assert_eq!(delayed["active"], 0, "{delayed}");

    let metrics = daemon.get("/metrics");
    assert_eq!(metrics.status, 200);
    for name in [
        "journeyc_events_accepted_total 5",
        "journeyc_timers_pending 0",
        "journeyc_outbox_depth",
        "journeyc_steps_executed_total",
        "journeyc_delivery_failures_total 0",
        "journeyc_intake_latency_seconds_bucket",
    ] {
        assert!(metrics.body.contains(name), "{name} missing:\n{}", metrics.body);
    }
    assert_eq!(daemon.get("/v1/nothing").status, 404);
}
