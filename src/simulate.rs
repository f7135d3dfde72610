//! The simulator: runs a compiled workspace over an event stream on a
//! virtual clock (no wall clock anywhere), deterministically.
//!
//! Customers are independent, so each customer's inputs are run in
//! timestamp order (ties keep file order) and the records of all customers
//! are merged by time, ties broken by customer id, each customer's records
//! keeping their causal order.

use crate::compile::bytecode::{Bundle, Condition, Trigger};
use crate::runtime::input::{parse_call, Call};
use crate::runtime::{CustomerState, Engine, Input, Millis, TraceRecord};
use std::collections::HashMap;
use std::sync::Arc;

/// A line of the event file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct EventError {
    pub line: usize,
    pub message: String,
}

/// Parses a JSON-lines event file (Segment `identify`/`track` calls),
/// validating each against the schema. Blank lines are skipped.
pub fn parse_events(text: &str, bundle: &Bundle) -> Result<Vec<Call>, EventError> {
    let mut calls = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(line).map_err(|error| EventError {
            line: index + 1,
            message: format!("not valid JSON: {error}"),
        })?;
        let call = parse_call(&json, &bundle.schema, None).map_err(|error| EventError {
            line: index + 1,
            message: error.to_string(),
        })?;
        calls.push(call);
    }
    Ok(calls)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Stop the virtual clock here: later events are ignored and nothing due
    /// later fires.
    pub until: Option<Millis>,
}

/// The instant after which recurring, time-driven triggers stop being
/// scheduled when no `--until` is given: the last event plus the longest
/// period such a trigger can need to fire (the longest `inactive` duration,
/// the longest window of a segment that triggers or ends enrollments, a week
/// for `every`).
pub fn default_horizon(bundle: &Bundle, last_event: Millis) -> Millis {
    let mut longest_seconds: i64 = 0;
    for program in &bundle.journeys {
        match &program.trigger {
            Trigger::Inactive { seconds, .. } => longest_seconds = longest_seconds.max(*seconds),
            Trigger::Every { .. } => longest_seconds = longest_seconds.max(7 * 86_400),
            Trigger::Entered { .. } | Trigger::Left { .. } => {
                longest_seconds = longest_seconds.max(bundle.history_window_seconds)
            }
            Trigger::Event { .. } => {}
        }
        let segment_conditions = program
            .exit_rules
            .iter()
            .chain(program.goals.iter().map(|g| &g.condition));
        if segment_conditions
            .into_iter()
            .any(|c| matches!(c, Condition::InSegment { .. }))
        {
            longest_seconds = longest_seconds.max(bundle.history_window_seconds);
        }
    }
    last_event.saturating_add(longest_seconds * 1000)
}

/// Runs the simulation and returns the whole trace in time order.
pub fn run(bundle: Arc<Bundle>, calls: Vec<Call>, options: Options) -> Vec<TraceRecord> {
    let last_event = calls.iter().map(|c| c.input.at()).max().unwrap_or(0);
    let horizon = options.until.unwrap_or_else(|| default_horizon(&bundle, last_event));
    let engine = Engine::new(bundle).with_horizon(horizon);

    let mut order: Vec<String> = Vec::new();
    let mut by_customer: HashMap<String, Vec<Input>> = HashMap::new();
    for call in calls {
        if options.until.is_some_and(|until| call.input.at() > until) {
            continue;
        }
        by_customer
            .entry(call.customer.clone())
            .or_insert_with(|| {
                order.push(call.customer.clone());
                Vec::new()
            })
            .push(call.input);
    }
    order.sort();

    let mut tagged: Vec<(Millis, usize, usize, TraceRecord)> = Vec::new();
    for (customer_index, customer) in order.iter().enumerate() {
        let mut inputs = by_customer.remove(customer).unwrap_or_default();
        inputs.sort_by_key(Input::at);
        let records = run_customer(&engine, customer, &inputs, options.until);
        for record in records {
            let sequence = tagged.len();
            tagged.push((record.at, customer_index, sequence, record));
        }
    }
    tagged.sort_by_key(|(at, customer, sequence, _)| (*at, *customer, *sequence));
    tagged.into_iter().map(|(_, _, _, record)| record).collect()
}

/// One customer's inputs, then its timers until none is left (or `until`).
pub fn run_customer(engine: &Engine, customer: &str, inputs: &[Input], until: Option<Millis>) -> Vec<TraceRecord> {
    let mut state = CustomerState::new(customer);
    let mut records = Vec::new();
    for input in inputs {
        records.extend(engine.apply(&mut state, input).records);
    }
    let mut previous: Option<Millis> = None;
    while let Some(at) = state.next_wake() {
        if until.is_some_and(|until| at > until) {
            break;
        }
        // Every wake-up moves the customer's next due time forward.
        if previous.is_some_and(|p| at <= p) {
            debug_assert!(false, "wake-up at {at} did not advance");
            break;
        }
        previous = Some(at);
        records.extend(engine.apply(&mut state, &Input::Wake { at }).records);
    }
    records
}
