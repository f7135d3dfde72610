//! One customer's failure is isolated: checked arithmetic (`event.n / -1`
//! with `n = i64::MIN` is absent, not a panic) and an input the interpreter
//! refuses (an `error` record; the other customers carry on).

use journeyc::compile::bytecode::{Bundle, Instr};
use std::process::Command;
use std::sync::Arc;

/// `divide` divides by -1, which overflows for `i64::MIN`.
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
  repeat 2 {
    repeat 2 {
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

fn summary(trace: &[serde_json::Value], customer: &str) -> Vec<String> {
    trace
        .iter()
        .filter(|r| r["customer"] == customer)
        .map(|r| format!("{} {} {}", r["at"], r["kind"], r["message"]).replace('"', ""))
        .collect()
}

#[test]
fn simulate_survives_i64_min_divided_by_minus_one() {
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
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let trace: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    // i64::MIN / -1 overflows: absent, so the comparison is false and no
    // `hello`; the journey goes on to its timer.
    assert_eq!(
        summary(&trace, "minus"),
        [
            "2026-05-01T10:00:00Z enter null",
            "2026-05-01T11:00:00Z send later",
            "2026-05-01T11:00:00Z exit null"
        ]
    );
    assert_eq!(summary(&trace, "other")[1], "2026-05-01T10:00:00Z send hello");
    assert!(trace.iter().all(|r| r["kind"] != "error"), "{trace:?}");
}

/// The workspace compiled, then its `spin` loops raised to 1000 × 1000 (as
/// a bundle the checker's bound would refuse): a million `wait until` a
/// past time for one input, past the interpreter's step limit.
fn spinning_bundle() -> Arc<Bundle> {
    use journeyc::workspace::{load, DiskFiles};
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("w.journey"), WORKSPACE).expect("write");
    let sources = load(&[dir.path().to_path_buf()]).expect("loads");
    let outcome = journeyc::check::check_workspace(&sources, &DiskFiles);
    let checked = outcome.checked.expect("checks");
    let mut bundle = journeyc::compile::compile(&checked);
    let spin = (bundle.journeys.iter())
        .position(|p| bundle.name(p.name) == "spin")
        .expect("spin");
    for instruction in &mut bundle.journeys[spin].code {
        if let Instr::LoopStart { times, .. } = instruction {
            *times = 1000;
        }
    }
    Arc::new(bundle)
}

#[test]
fn simulate_prints_an_error_record_for_the_failing_customer_and_carries_on() {
    let bundle = spinning_bundle();
    let calls = journeyc::simulate::parse_events(EVENTS, &bundle).expect("events");
    let trace: Vec<serde_json::Value> = journeyc::simulate::run(bundle, calls, Default::default())
        .iter()
        .map(|record| serde_json::from_str(&record.to_json_line()).expect("JSON"))
        .collect();
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
    // Nothing else of the spinner (its later `ping` is skipped); the others,
    // before and after it in id order, run to the end.
    assert_eq!(summary(&trace, "spinner").len(), 1);
    assert_eq!(summary(&trace, "minus").len(), 3);
    assert!(summary(&trace, "zed").contains(&"2026-05-01T11:02:00Z send later".to_string()));
}
