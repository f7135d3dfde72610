//! The readout: the daemon's `/v1/journeys/NAME/stats` and `journeyc
//! simulate --summary --format json` give the same document for the same
//! events, and split arms count treatment enrollments only.

use super::harness::*;
use std::process::Command;

const EXPERIMENT: &str = r#"
customer {
  email_opt_in: bool?
}

event signed_up {}
event purchase {}

message offer_a email { subject "A" body "a" }
message offer_b email { subject "B" body "b" }
message reminder email { subject "R" body "r" }

journey promo {
  trigger signed_up
  goal purchase within 3d
  holdout 30%
  split offer {
    a 50% { send offer_a }
    b 50% { send offer_b }
  }
  nudge: wait 1d
  send reminder
}
"#;

/// 60 sign-ups ten minutes ago; every third customer buys a minute later.
fn events(start: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let at =
        |minutes: i64| (start + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut out = Vec::new();
    for index in 0..60 {
        out.push(format!(
            r#"{{"type":"track","userId":"c{index:02}","event":"signed_up","properties":{{}},"timestamp":"{}","messageId":"s{index}"}}"#,
            at(0)
        ));
        if index % 3 == 0 {
            out.push(format!(
                r#"{{"type":"track","userId":"c{index:02}","event":"purchase","properties":{{}},"timestamp":"{}","messageId":"p{index}"}}"#,
                at(1)
            ));
        }
    }
    out
}

#[test]
fn the_daemon_and_the_simulator_report_the_same_readout() {
    let env = Env::new(EXPERIMENT);
    let start = chrono::Utc::now() - chrono::Duration::minutes(10);
    let lines = events(start);
    let file = env.root.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write events");

    let until = (start + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let output = Command::new(binary())
        .arg("simulate")
        .arg(env.workspace())
        .arg("--events")
        .arg(&file)
        .args(["--until", &until, "--summary", "--format", "json"])
        .output()
        .expect("journeyc simulate runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let simulated: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let simulated = &simulated["journeys"][0];

    let daemon = env.start(&[]);
    for line in &lines {
        let response = daemon.post("/v1/track", line);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let mut served = daemon.get("/v1/journeys/promo/stats").json();
    let object = served.as_object_mut().expect("an object");
    assert_eq!(object.remove("dead_letters"), Some(serde_json::json!(0)));
    object.remove("dead_letter_samples");
    assert_eq!(&served, simulated);

    // The numbers themselves, against the trace's own facts.
    let r = simulated;
    assert_eq!(r["entered"], 60);
    assert_eq!(r["active"], 60, "everyone waits at `nudge`");
    let holdout = &r["holdout"];
    let control = holdout["control"]["entered"].as_u64().expect("count");
    let treatment = holdout["treatment"]["entered"].as_u64().expect("count");
    assert_eq!(control + treatment, 60);
    let arms = &r["splits"]["offer"];
    let arm_entered = arms["a"]["entered"].as_u64().expect("count") + arms["b"]["entered"].as_u64().expect("count");
    assert_eq!(arm_entered, treatment, "arms count treatment enrollments only: {r}");
    assert_eq!(r["goals"]["purchase"], 20);
    assert_eq!(r["converted"], 20);
    let converted = holdout["control"]["converted"].as_u64().expect("count")
        + holdout["treatment"]["converted"].as_u64().expect("count");
    assert_eq!(converted, 20);
    let sent_or_skipped = |message: &str| {
        let stats = &r["messages"][message];
        let skipped: u64 = stats["skipped"]
            .as_object()
            .expect("skips")
            .values()
            .filter_map(|v| v.as_u64())
            .sum();
        stats["sent"].as_u64().expect("count") + skipped
    };
    assert_eq!(
        sent_or_skipped("offer_a") + sent_or_skipped("offer_b"),
        60,
        "every enrollment reaches one offer: {r}"
    );
    let skipped_holdout = r["messages"]["offer_a"]["skipped"]["holdout"].as_u64().unwrap_or(0)
        + r["messages"]["offer_b"]["skipped"]["holdout"].as_u64().unwrap_or(0);
    assert_eq!(skipped_holdout, control);
    let names: Vec<&str> = r["messages"]
        .as_object()
        .expect("messages")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, vec!["offer_a", "offer_b", "reminder"], "in step order");
    let nudge = r["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["label"] == "nudge")
        .expect("the nudge step");
    assert_eq!(nudge["waiting"], 60);
    // A wait makes no trace line; the interpreter reports the arrivals.
    assert_eq!(nudge["reached"], 60, "{nudge}");
    let steps = r["steps"].as_array().expect("steps");
    let reached = |kind: &str, name: &str| {
        steps
            .iter()
            .find(|s| s["kind"] == kind && s["name"] == name)
            .and_then(|s| s["reached"].as_u64())
            .expect("a step with a count")
    };
    assert_eq!(reached("split", "offer"), 60, "held-out enrollments pass the split too");
    assert_eq!(reached("send", "offer_a") + reached("send", "offer_b"), 60);
    assert_eq!(reached("send", "offer_a"), sent_or_skipped("offer_a"));
    assert_eq!(reached("send", "reminder"), 0, "nobody is past the wait");
    let rate = holdout["treatment"]["rate"].as_f64().expect("rate");
    let ci = &holdout["treatment"]["ci95"];
    assert!(ci[0].as_f64().expect("low") <= rate && rate <= ci[1].as_f64().expect("high"));
}

const ENGAGEMENT: &str = r#"
customer {
  email: string?
}

event signed_up {}

message welcome email { subject "Welcome" body "Hello" }
message tips email { subject "Tips" body "Try this" }

journey onboard {
  trigger signed_up
  send welcome
  wait 1h
  send tips
}
"#;

/// Engagement events (not declared in the workspace) posted to the daemon
/// over HTTP name the sends of a simulated run of the same sign-ups: the
/// daemon's stats count them per message, once per send, like the
/// simulator's summary of the same events, and a hard bounce skips the
/// next email.
#[test]
fn engagement_events_posted_over_http_are_counted_in_the_stats() {
    let env = Env::new(ENGAGEMENT);
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    let at =
        |minutes: i64| (start + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let customers = 12;
    let sign_ups: Vec<String> = (0..customers)
        .map(|index| {
            format!(
                r#"{{"type":"track","userId":"c{index:02}","event":"signed_up","properties":{{}},"timestamp":"{}","messageId":"s{index}"}}"#,
                at(0)
            )
        })
        .collect();
    let file = env.root.path().join("events.jsonl");
    let simulate = |lines: &[String], args: &[&str]| -> Vec<u8> {
        std::fs::write(&file, lines.join("\n") + "\n").expect("write events");
        let output = Command::new(binary())
            .arg("simulate")
            .arg(env.workspace())
            .arg("--events")
            .arg(&file)
            .args(args)
            .output()
            .expect("journeyc simulate runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    };
    // The send ids of `welcome`, from the trace.
    let trace = String::from_utf8(simulate(&sign_ups, &["--until", &at(40)])).expect("UTF-8");
    let mut ids = std::collections::BTreeMap::new();
    for line in trace.lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("a trace line");
        if record["kind"] == "send" && record["message"] == "welcome" {
            ids.insert(
                record["customer"].as_str().expect("customer").to_string(),
                record["id"].clone(),
            );
        }
    }
    assert_eq!(ids.len(), customers);

    // Everyone's welcome is delivered; c00–c05 open it (c00 twice), c00
    // and c01 click; c02 bounces hard, c03 marks it as spam; and one open
    // names a send that is not ours.
    let mut engagement = Vec::new();
    let mut event = |customer: &str, name: &str, minute: i64, extra: &str, number: usize| {
        let id = &ids[customer];
        engagement.push(format!(
            r#"{{"type":"track","userId":"{customer}","event":"{name}","properties":{{"email_id":{id}{extra}}},"timestamp":"{}","messageId":"e{number}"}}"#,
            at(minute)
        ));
    };
    let mut number = 0;
    for customer in ids.keys() {
        number += 1;
        event(customer, "Email Delivered", 1, "", number);
    }
    for (index, customer) in ["c00", "c00", "c01", "c02", "c03", "c04", "c05"].iter().enumerate() {
        event(customer, "Email Opened", 2 + index as i64, "", 100 + index);
    }
    event(
        "c00",
        "Email Link Clicked",
        10,
        r#","link_url":"https://example.com""#,
        200,
    );
    event("c01", "Email Link Clicked", 10, "", 201);
    event("c02", "Email Bounced", 11, r#","type":"hard""#, 202);
    event("c03", "Email Marked as Spam", 11, "", 203);
    engagement.push(format!(
        r#"{{"type":"track","userId":"c04","event":"Email Opened","properties":{{"email_id":"not-ours"}},"timestamp":"{}","messageId":"e300"}}"#,
        at(12)
    ));

    let daemon = env.start(&[]);
    for line in sign_ups.iter().chain(&engagement) {
        let response = daemon.post("/v1/track", line);
        assert_eq!(response.status, 200, "{line}: {}", response.body);
    }
    // `tips` is due an hour after the sign-up (30 minutes from now): the
    // suppression shows as soon as it is sent, so the stats are read now
    // and the skips are checked in the simulator's summary below.
    let stats = daemon.get("/v1/journeys/onboard/stats").json();
    let welcome = &stats["messages"]["welcome"];
    assert_eq!(welcome["sent"], customers as u64, "{stats}");
    assert_eq!(welcome["delivered"], customers as u64);
    assert_eq!(welcome["opened"], 6, "c00's second open counts once: {stats}");
    assert_eq!(welcome["clicked"], 2);
    assert_eq!(welcome["bounced"], 1);
    assert_eq!(welcome["complained"], 1);
    assert_eq!(welcome["unsubscribed"], 0);
    let metrics = daemon.get("/metrics").body;
    assert!(
        metrics.contains("journeyc_engagement_unattributed_total{engagement=\"opened\"} 1"),
        "{metrics}"
    );

    // The simulator's summary of the same events agrees, and after the
    // hour the bounced and the complaining customer's `tips` are skipped.
    let all: Vec<String> = sign_ups.iter().chain(&engagement).cloned().collect();
    let output = simulate(&all, &["--until", &at(90), "--summary", "--format", "json"]);
    let simulated: serde_json::Value = serde_json::from_slice(&output).expect("JSON");
    let summary = &simulated["journeys"][0];
    assert_eq!(&summary["messages"]["welcome"], welcome);
    assert_eq!(summary["messages"]["tips"]["skipped"]["bounced"], 1, "{summary}");
    assert_eq!(summary["messages"]["tips"]["skipped"]["complained"], 1);
    assert_eq!(summary["messages"]["tips"]["sent"], customers as u64 - 2);
    assert_eq!(simulated["unattributed"]["opened"], 1);
}

const QUICK: &str = r#"
event signed_up {}
event purchase {}

message welcome email { subject "Welcome" body "Hello" }

journey quick {
  trigger signed_up
  goal purchase within 3d
  send welcome
}
"#;

/// A journey that ends right after its send still counts a purchase inside
/// its goal window, also across a kill -9 between the two (the open window
/// is part of the customer's stored state).
#[test]
fn a_goal_after_the_end_is_counted_by_the_daemon_across_a_crash() {
    let env = Env::new(QUICK);
    let start = chrono::Utc::now() - chrono::Duration::hours(2);
    let at =
        |minutes: i64| (start + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let track = |customer: &str, event: &str, minutes: i64| {
        format!(
            r#"{{"type":"track","userId":"{customer}","event":"{event}","properties":{{}},"timestamp":"{}","messageId":"{customer}-{event}"}}"#,
            at(minutes)
        )
    };
    let daemon = env.start(&[]);
    for customer in ["ann", "bob", "cy"] {
        let response = daemon.post("/v1/track", &track(customer, "signed_up", 0));
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let ended = eventually("the enrollments end", || {
        let stats = daemon.get("/v1/journeys/quick/stats").json();
        (stats["exits"]["end"] == 3).then_some(stats)
    });
    assert_eq!(ended["converted"], 0);
    daemon.kill();

    let daemon = env.start(&[]);
    // An hour after the end: ann and bob buy (bob twice), cy does not.
    for (customer, minutes) in [("ann", 60), ("bob", 61)] {
        let response = daemon.post("/v1/track", &track(customer, "purchase", minutes));
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let again = format!(
        r#"{{"type":"track","userId":"bob","event":"purchase","properties":{{}},"timestamp":"{}","messageId":"bob-purchase-2"}}"#,
        at(62)
    );
    assert_eq!(daemon.post("/v1/track", &again).status, 200);
    let stats = eventually("the goals are counted", || {
        let stats = daemon.get("/v1/journeys/quick/stats").json();
        (stats["converted"] == 2).then_some(stats)
    });
    assert_eq!(stats["entered"], 3);
    assert_eq!(stats["active"], 0);
    assert_eq!(stats["goals"]["purchase"], 2, "once per enrollment: {stats}");
    assert_eq!(stats["exits"]["end"], 3);
}
