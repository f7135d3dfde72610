//! The simulator: runs a compiled workspace over an event stream on a
//! virtual clock (no wall clock anywhere), deterministically.
//!
//! One global timeline: inputs in order of (time, customer id), and between
//! them every customer's timers in order of (time, customer id).
//! Lines come out in time order as they are produced; each customer's lines
//! keep their causal order.

use crate::compile::bytecode::{Bundle, Trigger};
use crate::runtime::input::{parse_call_str, Call};
use crate::runtime::{CustomerState, Engine, Input, Millis, TraceRecord};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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
    read_events(text.as_bytes(), bundle)
}

/// [`parse_events`] from a reader, a line at a time: the file's text is
/// never held whole next to the calls parsed from it.
pub fn read_events(mut reader: impl std::io::BufRead, bundle: &Bundle) -> Result<Vec<Call>, EventError> {
    let mut calls = Vec::new();
    let mut line = String::new();
    for number in 1.. {
        line.clear();
        let read = reader.read_line(&mut line).map_err(|error| EventError {
            line: number,
            message: format!("cannot read: {error}"),
        })?;
        if read == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let call = parse_call_str(&line, &bundle.schema, None).map_err(|error| EventError {
            line: number,
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
/// the longest `count`/`seen` window of a segment that starts or ends
/// enrollments, a week for `every`).
pub fn default_horizon(engine: &Engine, last_event: Millis) -> Millis {
    let mut longest_seconds = engine.tracked_window_seconds();
    for program in &engine.bundle().journeys {
        match &program.trigger {
            Trigger::Inactive { seconds, .. } => longest_seconds = longest_seconds.max(*seconds),
            Trigger::Every { .. } => longest_seconds = longest_seconds.max(7 * 86_400),
            _ => {}
        }
    }
    last_event.saturating_add(longest_seconds * 1000)
}

/// Runs the simulation and returns the whole trace in time order.
pub fn run(bundle: Arc<Bundle>, calls: Vec<Call>, options: Options) -> Vec<TraceRecord> {
    let mut trace = Vec::new();
    run_streaming(bundle, calls, options, |record| trace.push(record.clone()));
    trace
}

/// Runs the simulation, handing each trace record to `emit` in time order
/// as it is produced: memory holds the customers' states, not the trace.
///
/// Inputs are taken in order of (timestamp, customer id), one customer's
/// simultaneous inputs in file order; before each input, every customer's
/// timers due strictly before it fire, in order of (due time, customer id).
/// Timers due at the input's instant fire after it. Nothing depends on the
/// order of customers in the file.
///
/// Returns the customers' final states (for positions of enrollments still
/// waiting when the clock stopped).
pub fn run_streaming(
    bundle: Arc<Bundle>,
    mut calls: Vec<Call>,
    options: Options,
    emit: impl FnMut(&TraceRecord),
) -> Vec<CustomerState> {
    let last_event = calls.iter().map(|c| c.input.at()).max().unwrap_or(0);
    let engine = Engine::new(bundle);
    let horizon = options.until.unwrap_or_else(|| default_horizon(&engine, last_event));
    if let Some(until) = options.until {
        calls.retain(|call| call.input.at() <= until);
    }
    // Stable: one customer's simultaneous inputs keep their file order.
    calls.sort_by(|a, b| (a.input.at(), &a.customer).cmp(&(b.input.at(), &b.customer)));

    // Customers are numbered in id order, so ties between customers never
    // depend on the order of the file.
    let mut ids: Vec<String> = calls.iter().map(|c| c.customer.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    let index: HashMap<String, usize> = ids.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect();
    let mut clock = VirtualClock {
        engine: engine.with_horizon(horizon),
        states: ids.into_iter().map(CustomerState::new).collect(),
        timers: BinaryHeap::new(),
        pushed: vec![None; index.len()],
        emit,
    };
    // By value: each call's memory is free for customer state once it ran.
    for call in calls {
        let at = call.input.at();
        clock.fire_timers(|due| due < at);
        clock.step(index[call.customer.as_str()], &call.input);
    }
    clock.fire_timers(|due| options.until.is_none_or(|until| due <= until));
    clock.states
}

/// The simulator's clock: customers' states and a heap of their wake-ups.
struct VirtualClock<F> {
    engine: Engine,
    states: Vec<CustomerState>,
    /// `(due, customer)`; an entry is stale when the customer's next
    /// wake-up has moved since it was pushed.
    timers: BinaryHeap<Reverse<(Millis, usize)>>,
    /// The due time last pushed per customer (no duplicate heap entries).
    pushed: Vec<Option<Millis>>,
    emit: F,
}

impl<F: FnMut(&TraceRecord)> VirtualClock<F> {
    fn step(&mut self, customer: usize, input: &Input) {
        let effects = self.engine.apply(&mut self.states[customer], input);
        effects.records.iter().for_each(&mut self.emit);
        if effects.wake_at != self.pushed[customer] {
            if let Some(due) = effects.wake_at {
                self.timers.push(Reverse((due, customer)));
            }
            self.pushed[customer] = effects.wake_at;
        }
    }

    /// Fires wake-ups in (time, customer) order while `wanted(due)`.
    fn fire_timers(&mut self, wanted: impl Fn(Millis) -> bool) {
        while let Some(Reverse((due, customer))) = self.timers.peek().copied() {
            if !wanted(due) {
                break;
            }
            self.timers.pop();
            if self.pushed[customer] == Some(due) {
                self.pushed[customer] = None;
                self.step(customer, &Input::Wake { at: due });
            }
        }
    }
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
