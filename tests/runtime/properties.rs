//! Properties of the simulator: determinism, independence from the order
//! of events in the file, and every enrollment ending within its static bound.

use journeyc::check::check_workspace;
use journeyc::compile::compile;
use journeyc::runtime::{Kind, TraceRecord};
use journeyc::simulate::{parse_events, run, Options};
use journeyc::workspace::{load, DiskFiles};
use std::path::Path;
use std::sync::Arc;

/// Checks, compiles and simulates a directory holding `*.journey` files and
/// `events.jsonl`.
pub fn simulate_dir(directory: &Path) -> Vec<TraceRecord> {
    let events = std::fs::read_to_string(directory.join("events.jsonl")).expect("events.jsonl");
    simulate_text(directory, &events)
}

pub fn simulate_text(directory: &Path, events: &str) -> Vec<TraceRecord> {
    simulate_text_with_arrivals(directory, events).0
}

/// [`simulate_text`], with the arrivals at wait steps (for the readout's
/// per-step `reached`).
pub fn simulate_text_with_arrivals(
    directory: &Path,
    events: &str,
) -> (Vec<TraceRecord>, Vec<(String, journeyc::runtime::trace::Step)>) {
    let sources = load(&[directory.to_path_buf()]).expect("workspace loads");
    let outcome = check_workspace(&sources, &DiskFiles);
    let checked = outcome
        .checked
        .unwrap_or_else(|| panic!("workspace has errors: {:#?}", outcome.diagnostics));
    let bundle = compile(&checked);
    let calls = parse_events(events, &bundle).expect("events parse");
    let (mut trace, mut arrivals) = (Vec::new(), Vec::new());
    journeyc::simulate::run_streaming_with_arrivals(
        Arc::new(bundle),
        calls.into(),
        Options::default(),
        |record| trace.push(record.clone()),
        |journey, step| arrivals.push((journey.to_string(), step.clone())),
    );
    (trace, arrivals)
}

fn lines(trace: &[TraceRecord]) -> String {
    trace.iter().map(|r| r.to_json_line() + "\n").collect()
}

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/runtime/examples")
        .join(name)
}

#[test]
fn same_input_same_trace() {
    for name in ["cart_recovery", "welcome_series"] {
        assert_eq!(
            lines(&simulate_dir(&example(name))),
            lines(&simulate_dir(&example(name)))
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 24, ..Default::default() })]

    /// Events with distinct timestamps may come in any file order.
    #[test]
    fn file_order_does_not_matter(seed in proptest::prelude::any::<u64>()) {
        let directory = example("welcome_series");
        let text = std::fs::read_to_string(directory.join("events.jsonl")).expect("events");
        let mut events: Vec<&str> = text.lines().collect();
        // Two identify calls share a timestamp (for different customers,
        // whose relative order does not matter either); shuffle all.
        let mut state = seed;
        for index in (1..events.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            events.swap(index, (state >> 33) as usize % (index + 1));
        }
        let shuffled = events.join("\n");
        proptest::prop_assert_eq!(lines(&simulate_text(&directory, &text)), lines(&simulate_text(&directory, &shuffled)));
    }
}

/// Every enrollment's exit comes no later than its entry plus the journey's
/// static bound from the checker.
#[test]
fn enrollments_end_within_their_static_bound() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("journeys");
    let sources = load(std::slice::from_ref(&directory)).expect("journeys load");
    let checked = check_workspace(&sources, &DiskFiles)
        .checked
        .expect("journeys check clean");
    let events = generated_events(&checked.schema, 300);
    let bundle = compile(&checked);
    let calls = parse_events(&events, &bundle).expect("generated events are valid");
    let trace = run(Arc::new(bundle), calls, Options::default());
    let mut entered: std::collections::HashMap<(String, String), i64> = Default::default();
    let mut exits = 0;
    for record in &trace {
        let key = (record.customer.clone(), record.journey.clone());
        match record.kind {
            Kind::Enter => {
                entered.insert(key, record.at);
            }
            Kind::Exit => {
                let start = entered.remove(&key).expect("an exit follows an enter");
                let bound = checked.bounds[&record.journey].max_duration_seconds * 1000;
                assert!(
                    record.at - start <= bound,
                    "{record:?} stayed {} ms > bound {bound} ms",
                    record.at - start
                );
                exits += 1;
            }
            _ => {}
        }
    }
    assert!(exits > 0, "the generated events enrolled nobody");
    assert!(entered.is_empty(), "every enrollment ends: {entered:?}");
}

/// A customer whose state remembers its settled segment memberships
/// between inputs (the simulator's, `SettleMark`) runs exactly as one whose
/// segments are evaluated at every settle: the same records, wake-ups and
/// states, input after input, wake-up after wake-up. And so does one whose
/// state forgets them before every input (a state decoded from the store).
/// On the campaign library, whose `entered` triggers and segment exit rules
/// depend on 7- to 90-day windows.
#[test]
fn settled_memberships_change_nothing() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("journeys");
    let sources = load(std::slice::from_ref(&directory)).expect("journeys load");
    let checked = check_workspace(&sources, &DiskFiles)
        .checked
        .expect("journeys check clean");
    let mut events = generated_events(&checked.schema, 300);
    // Profile changes between wake-ups: in and out of `promoters`.
    for customer in 0..300 {
        let (day, score) = (10 + customer % 40, [10, 2, 9, 7][customer % 4]);
        events.push_str(&format!(
            "{{\"type\":\"identify\",\"userId\":\"c{customer}\",\"traits\":{{\"nps_score\":{score}}},\"timestamp\":\"2026-03-{day:02}T12:00:00Z\"}}\n",
            day = 1 + day % 28,
        ));
    }
    let bundle = Arc::new(compile(&checked));
    let calls = parse_events(&events, &bundle).expect("generated events are valid");
    let last = calls.iter().map(|call| call.input.at()).max().expect("events");
    let engine = journeyc::runtime::Engine::new(bundle);
    let horizon = journeyc::simulate::default_horizon(&engine, last);
    let engine = engine.with_horizon(horizon);
    let reference = engine.clone().evaluating_every_settle();
    let by_customer = inputs_by_customer(&calls);
    let (mut applied, mut marked) = (0, 0);
    for (customer, inputs) in by_customer {
        let mut kept = journeyc::runtime::CustomerState::new(customer);
        let mut forgetful = kept.clone();
        let mut evaluated = kept.clone();
        inputs_then_wakes(inputs, horizon, |_, input| {
            let expected = reference.apply(&mut evaluated, input).expect("applies");
            forgetful.settled.clear();
            let decoded = engine.apply(&mut forgetful, input).expect("applies");
            marked += usize::from(kept.settled.is_set());
            let got = engine.apply(&mut kept, input).expect("applies");
            assert_eq!(got, expected, "{customer} at {}", input.at());
            assert_eq!(decoded, expected, "{customer} at {} (decoded)", input.at());
            assert_eq!(kept, evaluated, "{customer} at {}", input.at());
            assert_eq!(forgetful, evaluated, "{customer} at {} (decoded)", input.at());
            applied += 1;
            got.wake_at
        });
    }
    // Most inputs are wake-ups, which find the memberships settled.
    assert!(
        marked * 2 > applied,
        "{marked} of {applied} inputs found memberships settled"
    );
}

/// A send that takes its subject and body from an earlier render with the
/// same context (`runtime/rendered.rs`) gives exactly what rendering them
/// again gives: the same effects and states as the reference engine, which
/// renders every send, input after input, wake-up after wake-up. On the
/// campaign library with first names, locales (Persian and English
/// variants), tiers and points that differ between customers and change
/// between sends, so equal keys must mean equal contexts.
#[test]
fn remembered_renders_change_nothing() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("journeys");
    let sources = load(std::slice::from_ref(&directory)).expect("journeys load");
    let checked = check_workspace(&sources, &DiskFiles)
        .checked
        .expect("journeys check clean");
    let mut events = generated_events(&checked.schema, 200);
    let names = ["Ada", "Bahram", "Chen", "\"quoted\""];
    let locales = ["fa", "en-GB", "fa-IR", "de"];
    let tiers = ["gold", "silver", "bronze"];
    for customer in 0..200 {
        for (step, day) in [2, 9, 16, 23].into_iter().enumerate() {
            let k = customer + step;
            events.push_str(&format!(
                "{{\"type\":\"identify\",\"userId\":\"c{customer}\",\"traits\":{{\"firstName\":\"{}\",\"locale\":\"{}\",\"tier\":\"{}\",\"points\":{},\"nps_score\":{}}},\"timestamp\":\"2026-03-{day:02}T10:00:00Z\"}}\n",
                names[k % 4].replace('"', "\\\""),
                locales[(k / 2) % 4],
                tiers[k % 3],
                (k % 5) * 100,
                [10, 2, 9, 7][k % 4],
            ));
        }
    }
    let bundle = Arc::new(compile(&checked));
    let calls = parse_events(&events, &bundle).expect("generated events are valid");
    let last = calls.iter().map(|call| call.input.at()).max().expect("events");
    let engine = journeyc::runtime::Engine::new(bundle);
    let horizon = journeyc::simulate::default_horizon(&engine, last);
    let engine = engine.with_horizon(horizon);
    let reference = engine.clone().rendering_every_send();
    let by_customer = inputs_by_customer(&calls);
    let mut bodies = std::collections::BTreeSet::new();
    let mut sends = 0;
    for (customer, inputs) in by_customer {
        let mut remembering = journeyc::runtime::CustomerState::new(customer);
        let mut rendering = remembering.clone();
        inputs_then_wakes(inputs, horizon, |_, input| {
            let expected = reference.apply(&mut rendering, input).expect("applies");
            let got = engine.apply(&mut remembering, input).expect("applies");
            assert_eq!(got, expected, "{customer} at {}", input.at());
            assert_eq!(remembering, rendering, "{customer} at {}", input.at());
            for record in &got.records {
                if record.kind == Kind::Send {
                    sends += 1;
                    bodies.insert((record.subject.clone(), record.body.clone()));
                }
            }
            got.wake_at
        });
    }
    // Many sends, and many different texts among them: the contexts differ.
    assert!(
        sends > 500 && bodies.len() > 50,
        "{sends} sends, {} texts",
        bodies.len()
    );
}

/// Recomputing only the recurring triggers whose inputs changed (the fired
/// journey after an `every` or `inactive` occurrence, the `inactive`
/// journeys an event moves, nothing after an identify that leaves the time
/// zone alone) changes nothing: the same effects and states as the
/// reference engine, which recomputes every trigger each time, input after
/// input, wake-up after wake-up. So does a state that forgets the
/// [`journeyc::runtime::state::ScheduleMark`] before every input (a state
/// decoded from the store). With time-zone changes by identify, by a
/// journey's `set` and by a merge that brings a zone the customer lacked.
#[test]
fn rescheduling_what_moved_changes_nothing() {
    use journeyc::runtime::{CustomerState, Engine};
    // The campaign library: `every` triggers in customer-local time.
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("journeys");
    let sources = load(std::slice::from_ref(&directory)).expect("journeys load");
    let checked = check_workspace(&sources, &DiskFiles)
        .checked
        .expect("journeys check clean");
    let mut events = generated_events(&checked.schema, 200);
    let zones = ["Asia/Tokyo", "America/New_York", "UTC", "Pacific/Auckland"];
    for customer in 0..200 {
        let day = 3 + customer % 20;
        let zone = match customer % 5 {
            4 => "null".to_string(),
            n => format!("\"{}\"", zones[n]),
        };
        events.push_str(&format!(
            "{{\"type\":\"identify\",\"userId\":\"c{customer}\",\"traits\":{{\"timezone\":{zone}}},\"timestamp\":\"2026-03-{day:02}T15:00:00Z\"}}\n",
        ));
    }
    let bundle = Arc::new(compile(&checked));
    let library = rescheduling_side_by_side(bundle, &events);

    // `inactive` triggers, since any event and since one, beside `every`
    // ones and a journey that moves the customer to another zone.
    let workspace = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        workspace.path().join("w.journey"),
        r#"
customer { timezone: timezone?
  plan: string? }
event login
event purchase
event moved
message m push { body "m" }
journey weekly {
  trigger every mon at 09:00
  entry always
  send m
}
journey tuesday {
  trigger every tue at 18:30
  entry every 14d
  send m
}
journey nudge {
  trigger inactive 3d since login
  entry always
  send m
}
journey winback {
  trigger inactive 5d
  entry every 10d
  wait 2d
  send m
}
journey relocate {
  trigger moved
  wait 1h
  set customer.timezone = "Asia/Tokyo"
}
"#,
    )
    .expect("write journey");
    let sources = load(&[workspace.path().to_path_buf()]).expect("workspace loads");
    let checked = check_workspace(&sources, &DiskFiles).checked.expect("checks clean");
    let mut state: u64 = 7;
    let mut next = |bound: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % bound
    };
    let time = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let start = chrono::DateTime::parse_from_rfc3339("2026-05-01T08:00:00Z")
        .expect("time")
        .timestamp();
    let mut events = String::new();
    for customer in 0..200 {
        let mut at = start + next(86_400 * 3) as i64;
        for _ in 0..next(14) {
            at += next(86_400 * 3) as i64;
            let call = match next(9) {
                0..=2 => "\"type\":\"track\",\"event\":\"login\"".to_string(),
                3..=4 => "\"type\":\"track\",\"event\":\"purchase\"".to_string(),
                5 => "\"type\":\"track\",\"event\":\"moved\"".to_string(),
                6 => "\"type\":\"identify\",\"traits\":{\"timezone\":null}".to_string(),
                7 => "\"type\":\"identify\",\"traits\":{\"plan\":\"x\"}".to_string(),
                _ => format!(
                    "\"type\":\"identify\",\"traits\":{{\"timezone\":\"{}\"}}",
                    zones[next(4) as usize]
                ),
            };
            events.push_str(&format!(
                "{{{call},\"userId\":\"c{customer}\",\"timestamp\":\"{}\"}}\n",
                time(at)
            ));
        }
    }
    let bundle = Arc::new(compile(&checked));
    let small = rescheduling_side_by_side(bundle, &events);
    // Most inputs find the due times current, and some of them had a
    // merge before them.
    for (applied, marked, merged) in [library, small] {
        assert!(
            marked * 2 > applied,
            "{marked} of {applied} inputs found due times current"
        );
        assert!(merged > 10, "{merged} merges");
    }

    /// Runs `events` through three states per customer side by side: kept
    /// between inputs, forgetting the mark before every input, and on the
    /// reference engine; every 3rd customer gets, before its 4th input, a
    /// merge of an anonymous profile in Tokyo. Returns (inputs applied,
    /// inputs that found the due times current, merges).
    fn rescheduling_side_by_side(
        bundle: Arc<journeyc::compile::bytecode::Bundle>,
        events: &str,
    ) -> (usize, usize, usize) {
        let calls = parse_events(events, &bundle).expect("generated events are valid");
        let last = calls.iter().map(|call| call.input.at()).max().expect("events");
        let engine = Engine::new(bundle);
        let horizon = journeyc::simulate::default_horizon(&engine, last) + 30 * 86_400_000;
        let engine = engine.with_horizon(horizon);
        let reference = engine.clone().rescheduling_every_trigger();
        let by_customer = inputs_by_customer(&calls);
        let (mut applied, mut marked, mut merged) = (0, 0, 0);
        for (number, (customer, inputs)) in by_customer.into_iter().enumerate() {
            let mut kept = CustomerState::new(customer);
            let mut forgetful = kept.clone();
            let mut reference_state = kept.clone();
            inputs_then_wakes(inputs, horizon, |round, input| {
                if round == 3 && number % 3 == 0 {
                    let mut anonymous = CustomerState::new(format!("anonymous-{customer}"));
                    let tokyo = journeyc::compile::bytecode::Value::String("Asia/Tokyo".into());
                    anonymous.profile.insert("timezone".into(), tokyo);
                    anonymous.first_seen = Some(input.at() - 86_400_000);
                    for state in [&mut kept, &mut forgetful, &mut reference_state] {
                        let records = journeyc::runtime::merge::merge(state, anonymous.clone(), input.at());
                        assert!(records.is_empty());
                    }
                    merged += 1;
                }
                let expected = reference.apply(&mut reference_state, input).expect("applies");
                forgetful.scheduled.clear();
                let decoded = engine.apply(&mut forgetful, input).expect("applies");
                marked += usize::from(kept.scheduled.is_set());
                let got = engine.apply(&mut kept, input).expect("applies");
                assert_eq!(got, expected, "{customer} at {}", input.at());
                assert_eq!(decoded, expected, "{customer} at {} (decoded)", input.at());
                assert_eq!(kept, reference_state, "{customer} at {}", input.at());
                assert_eq!(forgetful, reference_state, "{customer} at {} (decoded)", input.at());
                applied += 1;
                got.wake_at
            });
        }
        (applied, marked, merged)
    }
}

/// Each customer's inputs in time order (stable: simultaneous inputs keep
/// their file order), customers in id order.
fn inputs_by_customer(
    calls: &[journeyc::runtime::input::Call],
) -> std::collections::BTreeMap<&str, Vec<&journeyc::runtime::Input>> {
    let mut by_customer: std::collections::BTreeMap<&str, Vec<&journeyc::runtime::Input>> = Default::default();
    for call in calls {
        by_customer.entry(&call.customer).or_default().push(&call.input);
    }
    by_customer
        .values_mut()
        .for_each(|inputs| inputs.sort_by_key(|input| input.at()));
    by_customer
}

/// Runs `step` on each of a customer's inputs in turn, then on its
/// wake-ups while they are due by `horizon`; `step` gets the round number
/// and the input, and answers the customer's next wake-up.
fn inputs_then_wakes(
    inputs: Vec<&journeyc::runtime::Input>,
    horizon: journeyc::runtime::Millis,
    mut step: impl FnMut(usize, &journeyc::runtime::Input) -> Option<journeyc::runtime::Millis>,
) {
    let mut wake = None;
    let mut inputs = inputs.into_iter();
    for round in 0.. {
        let input = match inputs.next() {
            Some(input) => input.clone(),
            None => match wake.filter(|at| *at <= horizon) {
                Some(at) => journeyc::runtime::Input::Wake { at },
                None => break,
            },
        };
        wake = step(round, &input);
    }
}

/// A deterministic stream of identifies and events for `customers` customers.
pub fn generated_events(schema: &journeyc::check::Schema, customers: usize) -> String {
    let mut out = String::new();
    let zones = ["UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin", "Asia/Tehran"];
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-01T08:00:00Z")
        .expect("time")
        .timestamp();
    let mut state: u64 = 42;
    let mut next = |bound: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % bound
    };
    let time = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    for customer in 0..customers {
        let mut at = start + next(86_400 * 3) as i64;
        let plan = ["free", "pro", "team"][next(3) as usize];
        out.push_str(&format!(
            "{{\"type\":\"identify\",\"userId\":\"c{customer}\",\"traits\":{{\"email\":\"c{customer}@example.com\",\"plan\":\"{plan}\",\"timezone\":\"{}\",\"lifetime_value\":{},\"points\":0,\"createdAt\":\"{}\",\"email_opt_in\":{},\"push_opt_in\":{}}},\"timestamp\":\"{}\"}}\n",
            zones[next(5) as usize], next(1000), time(at), next(4) > 0, next(2) > 0, time(at)
        ));
        for _ in 0..next(12) {
            at += next(86_400 * 4) as i64;
            let line = match next(8) {
                0 => "\"event\":\"Signed Up\",\"properties\":{\"source\":\"ads\"}".to_string(),
                1 => format!(
                    "\"event\":\"Order Completed\",\"properties\":{{\"order_id\":\"o{customer}\",\"total\":{}}}",
                    next(300)
                ),
                2 => "\"event\":\"Signed In\"".to_string(),
                3 => format!(
                    "\"event\":\"Checkout Started\",\"properties\":{{\"order_id\":\"o{customer}\",\"value\":{}}}",
                    next(100)
                ),
                4 => format!("\"event\":\"NPS Answered\",\"properties\":{{\"score\":{}}}", next(11)),
                5 => "\"event\":\"Survey Answered\",\"properties\":{\"reason\":\"price\"}".to_string(),
                6 => "\"event\":\"Referral Completed\",\"properties\":{\"role\":\"referrer\"}".to_string(),
                _ => "\"event\":\"Project Created\",\"properties\":{\"name\":\"p\"}".to_string(),
            };
            out.push_str(&format!(
                "{{\"type\":\"track\",\"userId\":\"c{customer}\",{line},\"timestamp\":\"{}\"}}\n",
                time(at)
            ));
        }
    }
    let _ = schema;
    out
}
