//! The worked examples of the contract (`examples/*/`: a workspace, events
//! and the trace `journeyc simulate` must print), run through the simulator.
//!
//! The expected files show only some fields and only the kinds
//! `enter send skip goal exit`; lines of one customer and journey appear in
//! order, and across customers the trace is in time order. The comparison
//! follows exactly that.

use journeyc::runtime::TraceRecord;
use std::collections::BTreeMap;
use std::path::Path;

use super::properties::simulate_dir;

const COMPARED_KINDS: [&str; 5] = ["enter", "send", "skip", "goal", "exit"];

fn check_example(name: &str) {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/runtime/examples")
        .join(name);
    let trace = simulate_dir(&directory);
    let expected_text = std::fs::read_to_string(directory.join("expected.jsonl")).expect("expected.jsonl");
    let expected: Vec<serde_json::Value> = expected_text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("expected line is JSON"))
        .collect();

    // The whole trace is in time order.
    assert!(trace.windows(2).all(|w| w[0].at <= w[1].at), "trace not in time order");

    let actual: Vec<serde_json::Value> = trace
        .iter()
        .map(|r: &TraceRecord| serde_json::to_value(r).expect("serializes"))
        .filter(|v| COMPARED_KINDS.contains(&v["kind"].as_str().unwrap_or("")))
        .collect();
    let group = |lines: &[serde_json::Value], project: Option<&[serde_json::Value]>| {
        let mut groups: BTreeMap<(String, String), Vec<serde_json::Value>> = BTreeMap::new();
        for (index, line) in lines.iter().enumerate() {
            let key = (
                line["customer"].as_str().unwrap_or("").to_string(),
                line["journey"].as_str().unwrap_or("").to_string(),
            );
            let _ = index;
            groups.entry(key).or_default().push(line.clone());
        }
        if let Some(expected) = project {
            // Keep only the fields the expected lines show (they all show the same kind of fields per line).
            let shown: Vec<String> = expected
                .iter()
                .flat_map(|e| e.as_object().into_iter().flat_map(|o| o.keys().cloned()))
                .collect();
            for lines in groups.values_mut() {
                for line in lines.iter_mut() {
                    if let Some(object) = line.as_object_mut() {
                        object.retain(|key, _| shown.contains(key));
                    }
                }
            }
        }
        groups
    };
    let expected_groups = group(&expected, None);
    let actual_groups = group(&actual, Some(&expected));
    // A goal line in the expected file may omit the goal name: compare only shown fields per line.
    assert_eq!(
        expected_groups.keys().collect::<Vec<_>>(),
        actual_groups.keys().collect::<Vec<_>>(),
        "customers and journeys differ"
    );
    for (key, expected_lines) in &expected_groups {
        let actual_lines = &actual_groups[key];
        assert_eq!(expected_lines.len(), actual_lines.len(), "{key:?}: {actual_lines:#?}");
        for (want, got) in expected_lines.iter().zip(actual_lines) {
            let want = want.as_object().expect("object");
            let got = got.as_object().expect("object");
            for (field, value) in want {
                assert_eq!(
                    got.get(field),
                    Some(value),
                    "{key:?}: field {field} of {want:?} vs {got:?}"
                );
            }
        }
    }
}

#[test]
fn cart_recovery() {
    check_example("cart_recovery");
}

#[test]
fn welcome_series() {
    check_example("welcome_series");
}
