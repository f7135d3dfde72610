//! The simulator on several threads (`simulate::run_parallel`) gives
//! exactly the sequential run's output: the same trace bytes, the same
//! arrivals at wait steps in the same order, the same final states. On the
//! campaign library, with merges (anonymous ids, aliases, chains of them)
//! and segment broadcasts, many of them at instants shared with inputs and
//! wake-ups.

use journeyc::check::check_workspace;
use journeyc::compile::bytecode::Bundle;
use journeyc::compile::compile;
use journeyc::runtime::trace::Step;
use journeyc::runtime::CustomerState;
use journeyc::simulate::{read_events, run_parallel, Options};
use journeyc::workspace::{load, DiskFiles};
use std::path::Path;
use std::sync::Arc;

fn library() -> Arc<Bundle> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("journeys");
    let sources = load(std::slice::from_ref(&directory)).expect("journeys load");
    let checked = check_workspace(&sources, &DiskFiles)
        .checked
        .expect("journeys check clean");
    Arc::new(compile(&checked))
}

/// What a run gives: the trace's bytes, the arrivals, the final states.
type Output = (Vec<u8>, Vec<(String, Step)>, Vec<CustomerState>);

fn simulate(bundle: &Arc<Bundle>, events: &str, threads: usize, options: Options) -> Output {
    let parsed = read_events(events.as_bytes(), bundle).expect("the events parse");
    let (mut trace, mut arrivals) = (Vec::new(), Vec::new());
    let mut arrive = |journey: &str, step: &Step| arrivals.push((journey.to_string(), step.clone()));
    let states = run_parallel(
        bundle.clone(),
        parsed,
        options,
        threads,
        |record, bytes| {
            journeyc::runtime::trace_json::write_line(record, bytes);
            bytes.push(b'\n');
        },
        |(), bytes| trace.extend_from_slice(bytes),
        Some(&mut arrive),
    );
    (trace, arrivals, states)
}

/// The campaign library's generated events (`customers` customers), with
/// anonymous visitors merged into them later, aliases between customers
/// (some chained), and broadcasts of `flash_deal` to several segments;
/// `seed` picks times and pairs. Times are whole hours, so inputs,
/// broadcasts and wake-ups share instants.
fn events(customers: usize, seed: u64) -> String {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("journeys");
    let sources = load(std::slice::from_ref(&directory)).expect("journeys load");
    let checked = check_workspace(&sources, &DiskFiles)
        .checked
        .expect("journeys check clean");
    let mut out = super::properties::generated_events(&checked.schema, customers);
    let mut state = seed;
    let mut next = |bound: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % bound
    };
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-01T08:00:00Z")
        .expect("time")
        .timestamp();
    let time = |hours: u64| {
        chrono::DateTime::from_timestamp(start + hours as i64 * 3600, 0)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let c = customers as u64;
    for visitor in 0..c / 3 {
        let (seen, merged) = (next(24 * 10), next(24 * 10));
        let (first, later) = (seen.min(merged), seen.max(merged));
        out.push_str(&format!(
            "{{\"type\":\"track\",\"anonymousId\":\"v{visitor}\",\"event\":\"Signed Up\",\"properties\":{{\"source\":\"ads\"}},\"timestamp\":\"{}\"}}\n",
            time(first)
        ));
        out.push_str(&format!(
            "{{\"type\":\"track\",\"anonymousId\":\"v{visitor}\",\"event\":\"Signed In\",\"timestamp\":\"{}\"}}\n",
            time(first + next(3))
        ));
        out.push_str(&format!(
            "{{\"type\":\"identify\",\"userId\":\"c{}\",\"anonymousId\":\"v{visitor}\",\"traits\":{{\"plan\":\"pro\"}},\"timestamp\":\"{}\"}}\n",
            next(c),
            time(later + 1)
        ));
    }
    // Aliases: one customer's id merged into another's; a later alias may
    // merge the merged one again (a chain).
    for _ in 0..c / 6 {
        out.push_str(&format!(
            "{{\"type\":\"alias\",\"userId\":\"c{}\",\"previousId\":\"c{}\",\"timestamp\":\"{}\"}}\n",
            next(c),
            next(c),
            time(24 + next(24 * 12))
        ));
    }
    let segments = ["active", "high_value", "new_customers", "promoters", "at_risk"];
    for broadcast in 0..12 {
        // Some on one instant, some on line numbers only (no messageId).
        let at = time(24 * (broadcast % 6) + next(48));
        let id = if broadcast % 2 == 0 {
            format!(",\"messageId\":\"b{broadcast}\"")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{{\"type\":\"trigger\",\"journey\":\"flash_deal\",\"segment\":\"{}\",\"properties\":{{\"coupon\":\"F{broadcast}\",\"percent\":{}}},\"timestamp\":\"{at}\"{id}}}\n",
            segments[next(segments.len() as u64) as usize],
            5 + next(40)
        ));
    }
    out
}

fn assert_same(expected: &Output, got: &Output, threads: usize) {
    assert!(
        expected.0 == got.0,
        "{threads} threads: the trace differs from the sequential run's at byte {}",
        expected
            .0
            .iter()
            .zip(&got.0)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.0.len().min(got.0.len()))
    );
    assert!(expected.1 == got.1, "{threads} threads: the arrivals differ");
    assert_eq!(expected.2.len(), got.2.len(), "{threads} threads: the final states");
    for (expected, got) in expected.2.iter().zip(&got.2) {
        assert_eq!(expected, got, "{threads} threads: the final state of {}", expected.id);
    }
}

#[test]
fn the_campaign_library_runs_the_same_on_one_two_and_three_threads() {
    let bundle = library();
    let events = events(400, 7);
    let sequential = simulate(&bundle, &events, 1, Options::default());
    let text = String::from_utf8_lossy(&sequential.0);
    // The run exercises what the sharding must respect.
    for wanted in [
        "\"reason\":\"merged\"",
        "\"journey\":\"flash_deal\"",
        "\"kind\":\"send\"",
    ] {
        assert!(text.contains(wanted), "the run has no {wanted}");
    }
    assert!(!sequential.1.is_empty(), "the run reaches wait steps");
    for threads in [2, 3] {
        assert_same(
            &sequential,
            &simulate(&bundle, &events, threads, Options::default()),
            threads,
        );
    }
}

#[test]
fn a_run_cut_by_until_is_the_same_on_several_threads() {
    let bundle = library();
    let events = events(150, 11);
    let options = Options {
        until: Some(
            chrono::DateTime::parse_from_rfc3339("2026-03-06T13:00:00Z")
                .expect("time")
                .timestamp_millis(),
        ),
        email_address_required: true,
    };
    let sequential = simulate(&bundle, &events, 1, options);
    for threads in [2, 3] {
        assert_same(&sequential, &simulate(&bundle, &events, threads, options), threads);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 8, ..Default::default() })]

    /// Any seed's merges and broadcasts, on two to five threads.
    #[test]
    fn any_merges_and_broadcasts_run_the_same_on_several_threads(seed in proptest::prelude::any::<u64>(), threads in 2usize..6) {
        let bundle = library();
        let events = events(60, seed);
        let sequential = simulate(&bundle, &events, 1, Options::default());
        assert_same(&sequential, &simulate(&bundle, &events, threads, Options::default()), threads);
    }
}
