//! One customer's failure is isolated: checked arithmetic (`event.n / -1`
//! with `n = i64::MIN` is absent, not a panic) and an input the interpreter
//! refuses (an `error` record; the other customers carry on).

use std::process::Command;

/// `divide` divides by -1 (overflows for i64::MIN); `spin` runs a million
/// `wait until` a past (absent) time without waiting: the step limit.
pub const WORKSPACE: &str = r#"
customer {
  retry_at: time?
}

event ping { n: int }
event go

message hello push { body "hello" }
message later push { body "later" }

journey divide {
  trigger ping
  entry always
  if event.n / -1 < 0 {
    send hello
  }
  wait 1h
  send later
}

journey spin {
  trigger go
  entry always
  repeat 1000 {
    repeat 1000 {
      wait until customer.retry_at
    }
  }
  send hello
}
"#;

const EVENTS: &str = r#"{"type":"track","userId":"minus","event":"ping","properties":{"n":-9223372036854775808},"timestamp":"2026-05-01T10:00:00Z"}
{"type":"track","userId":"other","event":"ping","properties":{"n":5},"timestamp":"2026-05-01T10:00:00Z"}
{"type":"track","userId":"spinner","event":"go","timestamp":"2026-05-01T10:00:00Z"}
{"type":"track","userId":"spinner","event":"ping","properties":{"n":1},"timestamp":"2026-05-01T10:01:00Z"}
{"type":"track","userId":"zed","event":"ping","properties":{"n":1},"timestamp":"2026-05-01T10:02:00Z"}
"#;

#[test]
fn simulate_prints_an_error_record_for_the_failing_customer_and_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("w.journey"), WORKSPACE).expect("write");
    std::fs::write(dir.path().join("events.jsonl"), EVENTS).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_journeyc"))
        .arg("simulate")
        .arg(dir.path().join("w.journey"))
        .arg("--events")
        .arg(dir.path().join("events.jsonl"))
        .output()
        .expect("journeyc runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "some customer failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("1 customer(s)"), "{stderr}");
    let trace: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    let of = |customer: &str| -> Vec<String> {
        trace
            .iter()
            .filter(|r| r["customer"] == customer)
            .map(|r| format!("{} {} {}", r["at"], r["kind"], r["message"]).replace('"', ""))
            .collect()
    };
    // i64::MIN / -1 overflows: absent, so the comparison is false and no
    // `hello`; the journey goes on to its timer.
    assert_eq!(
        of("minus"),
        [
            "2026-05-01T10:00:00Z enter null",
            "2026-05-01T11:00:00Z send later",
            "2026-05-01T11:00:00Z exit null"
        ]
    );
    assert_eq!(of("other")[1], "2026-05-01T10:00:00Z send hello");
    assert_eq!(of("other").len(), 4);
    // The spinner gets one error record and nothing after it (its later
    // `ping` is skipped); the customer after it in id order still runs.
    let errors: Vec<&serde_json::Value> = trace.iter().filter(|r| r["kind"] == "error").collect();
    assert_eq!(errors.len(), 1, "{trace:?}");
    assert_eq!(errors[0]["customer"], "spinner");
    assert_eq!(errors[0]["journey"], "spin");
    assert_eq!(errors[0]["at"], "2026-05-01T10:00:00Z");
    assert!(
        errors[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("without waiting")),
        "{errors:?}"
    );
    assert_eq!(of("spinner").len(), 1);
    assert!(
        of("zed").contains(&"2026-05-01T11:02:00Z send later".to_string()),
        "{:?}",
        of("zed")
    );
}
