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
    let reached: u64 = ["offer_a", "offer_b"]
        .iter()
        .map(|m| {
            let stats = &r["messages"][*m];
            let skipped: u64 = stats["skipped"]
                .as_object()
                .expect("skips")
                .values()
                .filter_map(|v| v.as_u64())
                .sum();
            stats["sent"].as_u64().expect("count") + skipped
        })
        .sum();
    assert_eq!(reached, 60, "every enrollment reaches one offer: {r}");
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
    let rate = holdout["treatment"]["rate"].as_f64().expect("rate");
    let ci = &holdout["treatment"]["ci95"];
    assert!(ci[0].as_f64().expect("low") <= rate && rate <= ci[1].as_f64().expect("high"));
}
