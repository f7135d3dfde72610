//! Segment broadcasts in the simulator: a `{"type": "trigger", "segment": …}`
//! line enters every customer seen so far who is in the segment at its
//! time, in id order, with the same entry rules as a per-customer trigger.

use journeyc::runtime::{Kind, TraceRecord};
use journeyc::simulate::{read_events, run_streaming, Options};
use std::sync::Arc;

const WORKSPACE: &str = r#"
customer { plan: "free" | "pro"? }
segment pro = customer.plan == "pro"
message offer_push push { body "{{ event.code }}" }
journey offer {
  trigger api { code: string }
  entry once
  send offer_push
}
"#;

fn bundle() -> Arc<journeyc::compile::bytecode::Bundle> {
    let mut sources = journeyc::source::SourceMap::new();
    sources.add("w.journey", WORKSPACE);
    let outcome = journeyc::check::check_workspace(&sources, &journeyc::workspace::MemoryFiles::default());
    Arc::new(journeyc::compile::compile(&outcome.checked.expect("checks")))
}

fn simulate(lines: &[&str]) -> Vec<TraceRecord> {
    let bundle = bundle();
    let text = lines.join("\n");
    let events = read_events(text.as_bytes(), &bundle).expect("the events parse");
    let mut trace = Vec::new();
    run_streaming(bundle, events, Options::default(), |record| trace.push(record.clone()));
    trace
}

fn identify(customer: &str, plan: &str, at: &str) -> String {
    format!(r#"{{"type":"identify","userId":"{customer}","traits":{{"plan":"{plan}"}},"timestamp":"{at}"}}"#)
}

fn broadcast(code: &str, at: &str) -> String {
    format!(
        r#"{{"type":"trigger","journey":"offer","segment":"pro","properties":{{"code":"{code}"}},"timestamp":"{at}"}}"#
    )
}

fn sends(trace: &[TraceRecord]) -> Vec<(String, String)> {
    (trace.iter())
        .filter(|r| r.kind == Kind::Send)
        .map(|r| (r.customer.clone(), journeyc::runtime::trace::format_time(r.at)))
        .collect()
}

#[test]
fn a_broadcast_enters_the_members_seen_so_far_in_id_order_and_entry_once_holds() {
    let lines = [
        identify("zed", "pro", "2026-03-01T09:00:00Z"),
        identify("amy", "pro", "2026-03-01T09:00:00Z"),
        identify("bob", "free", "2026-03-01T09:00:00Z"),
        // Becomes pro at the broadcast's instant: inputs of an instant come first.
        identify("cat", "pro", "2026-03-01T10:00:00Z"),
        broadcast("FIRST", "2026-03-01T10:00:00Z"),
        // Not seen before the first broadcast; and amy leaves the segment.
        identify("dan", "pro", "2026-03-01T11:00:00Z"),
        identify("amy", "free", "2026-03-01T11:00:00Z"),
        broadcast("SECOND", "2026-03-01T12:00:00Z"),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let trace = simulate(&lines);
    let at = |hour: u32| {
        journeyc::runtime::trace::format_time(
            journeyc::runtime::trace::parse_time(&format!("2026-03-01T{hour}:00:00Z")).expect("a time"),
        )
    };
    assert_eq!(
        sends(&trace),
        [
            ("amy".to_string(), at(10)),
            ("cat".to_string(), at(10)),
            ("zed".to_string(), at(10)),
            ("dan".to_string(), at(12)),
        ],
        "entry once: the second broadcast enters only dan"
    );
    let offer = trace.iter().find(|r| r.kind == Kind::Send).expect("a send");
    assert_eq!(offer.body.as_deref(), Some("FIRST"), "the properties are event.*");
}

#[test]
fn a_broadcast_line_is_validated_like_a_trigger_call() {
    let bundle = bundle();
    let unknown = r#"{"type":"trigger","journey":"offer","segment":"pr","properties":{"code":"X"},"timestamp":"2026-03-01T10:00:00Z"}"#;
    let error = read_events(unknown.as_bytes(), &bundle)
        .err()
        .expect("refused")
        .to_string();
    assert_eq!(
        error,
        "line 1: segment: no segment `pr` in the workspace (did you mean `pro`?)"
    );
    let untyped = r#"{"type":"trigger","journey":"offer","segment":"pro","properties":{"code":1},"timestamp":"2026-03-01T10:00:00Z"}"#;
    let error = read_events(untyped.as_bytes(), &bundle)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.starts_with("line 1: properties.code"), "{error}");
    let error = journeyc::simulate::parse_events(&broadcast("X", "2026-03-01T10:00:00Z"), &bundle)
        .expect_err("not a call of one customer")
        .to_string();
    assert!(error.contains("segment broadcast"), "{error}");
}
