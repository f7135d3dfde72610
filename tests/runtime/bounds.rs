//! One busy customer stays small: every per-customer collection is bounded,
//! so an event's cost does not grow with history. And the event-time rules
//! of the input layer (skew correction, representable range) as the
//! simulator sees them.

use journeyc::check::check_workspace;
use journeyc::compile::compile;
use journeyc::runtime::input::{parse_call_str, CallError, Input};
use journeyc::runtime::state::{HISTORY_PER_EVENT_MAX, MESSAGE_IDS_MAX, SENDS_MAX};
use journeyc::runtime::trace::parse_time;
use journeyc::runtime::{CustomerState, Engine};
use journeyc::workspace::{load, DiskFiles};
use std::collections::BTreeMap;
use std::sync::Arc;

const WORKSPACE: &str = r#"
event login
segment regular = count(login within 365d) >= 900
message hi push { body "hi" }
journey greet {
  trigger login
  entry always
  send hi
}
"#;

fn engine() -> Engine {
    engine_for(WORKSPACE)
}

#[test]
fn a_busy_customer_stays_bounded() {
    let engine = engine();
    let mut state = CustomerState::new("busy");
    let start = parse_time("2026-01-01T00:00:00Z").expect("time");
    let mut sizes = Vec::new();
    for i in 0..30_000i64 {
        let input = Input::Track {
            event: "login".into(),
            properties: BTreeMap::new(),
            at: start + i * 60_000,
            message_id: Some(format!("{i:0>256}")),
        };
        engine.apply(&mut state, &input).expect("applies");
        if i % 5_000 == 4_999 {
            sizes.push(postcard::to_allocvec(&state).expect("encode").len());
        }
    }
    assert!(state.message_ids.len() <= MESSAGE_IDS_MAX);
    assert!(state.message_ids.iter().all(|(_, digest)| digest.len() == 32));
    assert!(state.history.values().all(|times| times.len() <= HISTORY_PER_EVENT_MAX));
    assert!(state.sends.len() <= SENDS_MAX);
    // The record stops growing once the bounds are reached (a few bytes of
    // growing counters aside).
    assert!(
        sizes.iter().all(|size| size.abs_diff(sizes[0]) < 64),
        "record sizes {sizes:?}"
    );
    assert!(sizes[0] < 128 * 1024, "record sizes {sizes:?}");
    assert_eq!(state.history.get("login").map(|t| t.len()), Some(HISTORY_PER_EVENT_MAX));
    // The latest messageId is still remembered: a retry is ignored.
    let retry = Input::Track {
        event: "login".into(),
        properties: BTreeMap::new(),
        at: start + 30_000 * 60_000,
        message_id: Some(format!("{:0>256}", 29_999)),
    };
    assert!(engine.apply(&mut state, &retry).expect("applies").records.is_empty());
}

#[test]
fn the_simulator_corrects_clock_skew_and_refuses_unrepresentable_times() {
    let engine = engine();
    let schema = &engine.bundle().schema;
    // The device clock runs 2 h fast; receivedAt is the receiver's clock.
    let skewed = r#"{"type":"track","userId":"a","event":"login","timestamp":"2026-01-01T12:00:00Z","sentAt":"2026-01-01T12:05:00Z","receivedAt":"2026-01-01T10:05:00Z"}"#;
    let call = parse_call_str(skewed, schema, None).expect("valid");
    assert_eq!(call.input.at(), parse_time("2026-01-01T10:00:00Z").expect("time"));
    // Without receivedAt there is nothing to correct against.
    let plain = r#"{"type":"track","userId":"a","event":"login","timestamp":"2026-01-01T12:00:00Z","sentAt":"2026-01-01T12:05:00Z"}"#;
    let call = parse_call_str(plain, schema, None).expect("valid");
    assert_eq!(call.input.at(), parse_time("2026-01-01T12:00:00Z").expect("time"));
    let old = r#"{"type":"track","userId":"a","event":"login","timestamp":"1969-07-20T20:17:00Z"}"#;
    let Err(CallError::Input(error)) = parse_call_str(old, schema, None) else {
        panic!("a time before 1970 is refused");
    };
    assert_eq!(error.field, "timestamp");
}

const EVERY_DAY: &str = r#"
event login
message hi push { body "hi" }
journey once_daily {
  trigger every day at 09:00
  timezone "Europe/Berlin"
  entry once
  send hi
}
journey weekly_at_most {
  trigger every day at 10:00
  entry every 7d
  send hi
}
"#;

/// The engine of a one-file workspace.
pub fn engine_for(source: &str) -> Engine {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("w.journey"), source).expect("write");
    let sources = load(&[dir.path().to_path_buf()]).expect("load");
    let checked = check_workspace(&sources, &DiskFiles).checked.expect("checks");
    Engine::new(Arc::new(compile(&checked)))
}

fn login(at: &str, id: &str) -> Input {
    Input::Track {
        event: "login".into(),
        properties: BTreeMap::new(),
        at: parse_time(at).expect("time"),
        message_id: Some(id.into()),
    }
}

/// An `every` occurrence that cannot enter its journey is not processed day
/// by day: 600 years between two inputs are 219,000 daily occurrences, more
/// than the interpreter's bound on rounds of due work (80,000), so stepping
/// fails with `DueWorkLimit` where computing the next occurrence succeeds.
#[test]
fn a_600_year_gap_skips_occurrences_that_cannot_enter() {
    let engine = engine_for(EVERY_DAY);
    let mut state = CustomerState::new("far");
    engine
        .apply(&mut state, &login("2026-03-04T00:00:00Z", "a"))
        .expect("first input");
    // Fire the first occurrences of both journeys (the `once` one is used up).
    engine
        .apply(&mut state, &login("2026-03-04T12:00:00Z", "b"))
        .expect("same day");
    let effects = engine
        .apply(&mut state, &login("2626-03-04T12:00:00Z", "c"))
        .expect("600 years later");
    // The `once` journey entered only on the first day.
    let entered: Vec<_> = effects.records.iter().filter(|r| r.journey == "once_daily").collect();
    assert!(entered.is_empty(), "{entered:?}");
    // `entry every 7d` entered every seventh day at 10:00 UTC: 600 years of
    // weeks after the entry of 2026-03-04.
    let weekly: Vec<_> = (effects.records.iter())
        .filter(|r| r.journey == "weekly_at_most" && r.kind == journeyc::runtime::trace::Kind::Enter)
        .map(|r| r.at)
        .collect();
    let first = parse_time("2026-03-11T10:00:00Z").expect("time");
    assert_eq!(weekly.first(), Some(&first));
    assert!(
        weekly.windows(2).all(|w| w[1] - w[0] == 7 * 86_400_000),
        "weekly entries"
    );
    let last = *weekly.last().expect("entries");
    assert!(last <= parse_time("2626-03-04T12:00:00Z").expect("time"));
    assert!(last + 7 * 86_400_000 > parse_time("2626-03-04T12:00:00Z").expect("time"));
    // The next occurrence of the `once` journey is the next Berlin 09:00
    // (08:00 UTC in March), as stepping would have left it.
    assert_eq!(
        state.schedules.get("once_daily"),
        Some(&parse_time("2626-03-05T08:00:00Z").expect("time"))
    );
    // Stepping leaves the `entry every` journey at its next daily
    // occurrence too, whether or not it can enter then.
    assert_eq!(
        state.schedules.get("weekly_at_most"),
        Some(&parse_time("2626-03-05T10:00:00Z").expect("time"))
    );
}

/// With a horizon (the simulator), a spent `every` journey asks for no
/// wake-up per day: `entry once` used leaves no schedule, and `entry every
/// 7d` is next due when its period ends, so a customer is woken once a week
/// through the horizon instead of once a day.
#[test]
fn the_simulator_wakes_no_one_for_spent_occurrences() {
    let horizon = parse_time("2626-03-05T00:00:00Z").expect("time");
    let engine = engine_for(EVERY_DAY).with_horizon(horizon);
    let mut state = CustomerState::new("far");
    engine
        .apply(&mut state, &login("2026-03-04T00:00:00Z", "a"))
        .expect("first input");
    let effects = engine
        .apply(&mut state, &login("2026-03-04T12:00:00Z", "b"))
        .expect("same day");
    assert_eq!(state.schedules.get("once_daily"), None);
    let week_later = parse_time("2026-03-11T10:00:00Z").expect("time");
    assert_eq!(state.schedules.get("weekly_at_most"), Some(&week_later));
    assert_eq!(effects.wake_at, Some(week_later));
}
