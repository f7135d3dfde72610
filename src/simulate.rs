//! The simulator: runs a compiled workspace over an event stream on a
//! virtual clock (no wall clock anywhere), deterministically.
//!
//! One global timeline: inputs in order of (time, customer id), and between
//! them every customer's timers in order of (time, customer id).
//! Lines come out in time order as they are produced; each customer's lines
//! keep their causal order.

use crate::compile::bytecode::Value;
use crate::compile::bytecode::{Bundle, Trigger};
use crate::runtime::broadcast::{self as broadcasts, Broadcast};
use crate::runtime::input::{parse_call_str, Call};
use crate::runtime::trace::Step;
use crate::runtime::{CustomerState, Engine, Input, Millis, TraceRecord};
use crate::syntax::ast::Channel;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
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
/// Segment broadcasts need the whole timeline: use [`read_events`].
pub fn parse_events(text: &str, bundle: &Bundle) -> Result<Vec<Call>, EventError> {
    let mut calls = Vec::new();
    let mut broadcast_line = None;
    for_each_call(
        text.as_bytes(),
        bundle,
        |call| calls.push(call),
        |line, _| {
            broadcast_line.get_or_insert(line);
        },
    )?;
    if let Some(line) = broadcast_line {
        return Err(EventError {
            line,
            message: "a segment broadcast is not a call of one customer; simulate the file".to_string(),
        });
    }
    Ok(calls)
}

/// [`parse_events`] from a reader, a line at a time, into the compact
/// form the simulator keeps until each input's turn: the file's text is
/// never held whole, nor every call as a [`Call`].
pub fn read_events(reader: impl std::io::BufRead, bundle: &Bundle) -> Result<Events, EventError> {
    let mut events = Events::default();
    let mut broadcasts = Vec::new();
    for_each_call(
        reader,
        bundle,
        |call| events.push(call),
        |line, broadcast| broadcasts.push((line, broadcast)),
    )?;
    events.broadcasts = broadcasts;
    Ok(events)
}

/// Calls each line's call, or its segment broadcast (a trigger line naming
/// a `segment`: [`crate::runtime::broadcast::parse`]) with its line number.
fn for_each_call(
    mut reader: impl std::io::BufRead,
    bundle: &Bundle,
    mut each: impl FnMut(Call),
    mut each_broadcast: impl FnMut(usize, Broadcast),
) -> Result<(), EventError> {
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
        if line.contains("\"segment\"") {
            let json: Option<serde_json::Value> = serde_json::from_str(&line).ok();
            if let Some(json) = json.filter(|json| json.get("segment").is_some() && json["type"] == "trigger") {
                let broadcast = broadcasts::parse(&json, bundle, None).map_err(|error| EventError {
                    line: number,
                    message: error.to_string(),
                })?;
                each_broadcast(number, broadcast);
                continue;
            }
        }
        let call = parse_call_str(&line, &bundle.schema, None).map_err(|error| EventError {
            line: number,
            message: error.to_string(),
        })?;
        each(call);
    }
    Ok(())
}

/// Validated inputs waiting for their turn, in a compact form: customers
/// and field names as numbers, fields as boxed slices (a [`Call`]'s
/// `BTreeMap` allocates a node of eleven slots for one property). A million
/// inputs take about a third of the memory they take as calls.
#[derive(Default)]
pub struct Events {
    /// Customer ids, numbered in order of first appearance.
    customers: Interner,
    /// Event and field names.
    names: Interner,
    inputs: Vec<Pending>,
    /// Segment broadcasts with their line numbers.
    broadcasts: Vec<(usize, Broadcast)>,
}

/// Strings numbered in order of first appearance.
#[derive(Default)]
struct Interner {
    strings: Vec<String>,
    numbers: HashMap<String, u32>,
}

impl Interner {
    fn number(&mut self, string: String) -> u32 {
        if let Some(number) = self.numbers.get(&string) {
            return *number;
        }
        let number = self.strings.len() as u32;
        self.numbers.insert(string.clone(), number);
        self.strings.push(string);
        number
    }

    fn get(&self, number: u32) -> String {
        self.strings[number as usize].clone()
    }
}

#[derive(Clone, Copy)]
enum PendingKind {
    Identify,
    /// The event's name.
    Track(u32),
    /// The journey's name.
    Trigger(u32),
}

struct Pending {
    customer: u32,
    at: Millis,
    kind: PendingKind,
    fields: Box<[(u32, Value)]>,
    /// An identify's subscription traits.
    subscriptions: Box<[(Channel, bool)]>,
    message_id: Option<Box<str>>,
    /// Another id of the customer to merge first ([`Call::merge`]).
    merge: Option<u32>,
    /// Attributes the call's context fills ([`Call::fill`]).
    fill: Box<[(u32, Value)]>,
}

impl Pending {
    fn input(&self, names: &Interner) -> Input {
        let fields = (self.fields.iter())
            .map(|(name, value)| (names.get(*name), value.clone()))
            .collect();
        let message_id = self.message_id.as_deref().map(str::to_string);
        match self.kind {
            PendingKind::Identify => Input::Identify {
                traits: fields,
                subscriptions: self.subscriptions.iter().copied().collect(),
                at: self.at,
                message_id,
            },
            PendingKind::Track(event) => Input::Track {
                event: names.get(event),
                properties: fields,
                at: self.at,
                message_id,
            },
            PendingKind::Trigger(journey) => Input::Trigger {
                journey: names.get(journey),
                properties: fields,
                at: self.at,
                message_id,
            },
        }
    }
}

impl Events {
    pub fn push(&mut self, call: Call) {
        let (kind, fields, subscriptions, at, message_id) = match call.input {
            Input::Identify {
                traits,
                subscriptions,
                at,
                message_id,
            } => (PendingKind::Identify, traits, subscriptions, at, message_id),
            Input::Track {
                event,
                properties,
                at,
                message_id,
            } => (
                PendingKind::Track(self.names.number(event)),
                properties,
                BTreeMap::new(),
                at,
                message_id,
            ),
            Input::Trigger {
                journey,
                properties,
                at,
                message_id,
            } => (
                PendingKind::Trigger(self.names.number(journey)),
                properties,
                BTreeMap::new(),
                at,
                message_id,
            ),
            // Event files hold calls only.
            Input::Wake { .. } => return,
        };
        let fields = (fields.into_iter())
            .map(|(name, value)| (self.names.number(name), value))
            .collect();
        let merge = call.merge.map(|id| self.customers.number(id));
        let fill = (call.fill.into_iter())
            .map(|(name, value)| (self.names.number(name), value))
            .collect();
        self.inputs.push(Pending {
            customer: self.customers.number(call.customer),
            at,
            kind,
            fields,
            subscriptions: subscriptions.into_iter().collect(),
            message_id: message_id.map(String::into_boxed_str),
            merge,
            fill,
        });
    }
}

impl From<Vec<Call>> for Events {
    fn from(calls: Vec<Call>) -> Events {
        let mut events = Events::default();
        calls.into_iter().for_each(|call| events.push(call));
        events
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Stop the virtual clock here: later events are ignored and nothing due
    /// later fires.
    pub until: Option<Millis>,
    /// Email sends to customers without an `email` are skipped
    /// `no_address`, as in a daemon that delivers email over SMTP.
    pub email_address_required: bool,
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
    run_streaming(bundle, calls.into(), options, |record| trace.push(record.clone()));
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
    events: Events,
    options: Options,
    emit: impl FnMut(&TraceRecord),
) -> Vec<CustomerState> {
    run_streaming_with_arrivals(bundle, events, options, emit, |_, _| {})
}

/// [`run_streaming`], also handing every arrival at a wait step (which no
/// trace line marks) to `arrive`, for the statistics' per-step `reached`.
pub fn run_streaming_with_arrivals(
    bundle: Arc<Bundle>,
    events: Events,
    options: Options,
    emit: impl FnMut(&TraceRecord),
    arrive: impl FnMut(&str, &Step),
) -> Vec<CustomerState> {
    let Events {
        customers,
        names,
        mut inputs,
        broadcasts: mut pending_broadcasts,
    } = events;
    let last_event = (inputs.iter().map(|input| input.at))
        .chain(pending_broadcasts.iter().map(|(_, b)| b.at))
        .max()
        .unwrap_or(0);
    let engine = Engine::new(bundle);
    let engine = if options.email_address_required {
        engine.requiring_email_address()
    } else {
        engine
    };
    let horizon = options.until.unwrap_or_else(|| default_horizon(&engine, last_event));
    if let Some(until) = options.until {
        inputs.retain(|input| input.at <= until);
        pending_broadcasts.retain(|(_, broadcast)| broadcast.at <= until);
    }
    // A broadcast runs after the inputs of its instant, in file order.
    pending_broadcasts.sort_by_key(|(line, broadcast)| (broadcast.at, *line));
    let mut pending_broadcasts = pending_broadcasts.into_iter().peekable();
    // Customers are ranked in id order, so ties between customers never
    // depend on the order of the file.
    let mut by_id: Vec<(String, u32)> = customers.strings.into_iter().zip(0..).collect();
    by_id.sort_unstable();
    let mut rank = vec![0; by_id.len()];
    by_id
        .iter()
        .enumerate()
        .for_each(|(position, (_, number))| rank[*number as usize] = position);
    // Stable: one customer's simultaneous inputs keep their file order.
    inputs.sort_by_key(|input| (input.at, rank[input.customer as usize]));
    let mut clock = VirtualClock {
        engine: engine.with_horizon(horizon),
        states: by_id.into_iter().map(|(id, _)| CustomerState::new(id)).collect(),
        timers: BinaryHeap::new(),
        pushed: vec![None; rank.len()],
        failed: vec![false; rank.len()],
        aliases: Aliases::new(rank.len()),
        emit,
        arrive,
    };
    // By value: each input's memory is free for customer state once it ran.
    for pending in inputs {
        while let Some((line, broadcast)) = pending_broadcasts.next_if(|(_, b)| b.at < pending.at) {
            clock.fire_timers(|due| due < broadcast.at);
            clock.broadcast(line, &broadcast);
        }
        clock.fire_timers(|due| due < pending.at);
        let customer = clock.aliases.resolve(rank[pending.customer as usize]);
        if let Some(other) = pending.merge {
            clock.merge(rank[other as usize], customer, pending.at);
        }
        let input = pending.input(&names);
        if !pending.fill.is_empty() {
            let fill = (pending.fill.iter())
                .map(|(name, value)| (names.get(*name), value.clone()))
                .collect();
            let profile = &clock.states[customer].profile;
            if let Some(identify) = crate::runtime::input::context_fill(profile, &fill, &input) {
                clock.step(customer, &identify);
            }
        }
        clock.step(customer, &input);
    }
    for (line, broadcast) in pending_broadcasts {
        clock.fire_timers(|due| due < broadcast.at);
        clock.broadcast(line, &broadcast);
    }
    clock.fire_timers(|due| options.until.is_none_or(|until| due <= until));
    clock.states
}

/// The simulator's clock: customers' states and a heap of their wake-ups.
struct VirtualClock<F, A> {
    engine: Engine,
    states: Vec<CustomerState>,
    /// `(due, customer)`; an entry is stale when the customer's next
    /// wake-up has moved since it was pushed.
    timers: BinaryHeap<Reverse<(Millis, usize)>>,
    /// The due time last pushed per customer (no duplicate heap entries).
    pushed: Vec<Option<Millis>>,
    /// Customers an input failed for: skipped from then on.
    failed: Vec<bool>,
    aliases: Aliases,
    emit: F,
    arrive: A,
}

/// Which customers were merged into which (by rank): the simulator's alias
/// map, with the rules of the daemon's (`docs/daemon.md`, "Identity").
struct Aliases {
    /// The customer an id was merged into.
    of: Vec<Option<usize>>,
    /// The ids merged into a customer.
    merged: HashMap<usize, Vec<usize>>,
}

impl Aliases {
    fn new(customers: usize) -> Aliases {
        Aliases {
            of: vec![None; customers],
            merged: HashMap::new(),
        }
    }

    fn resolve(&self, customer: usize) -> usize {
        self.of[customer].unwrap_or(customer)
    }

    /// Records `anonymous` (and what was merged into it) as merged into
    /// `user`, within [`crate::runtime::merge::ALIASES_MAX`] per customer.
    fn add(&mut self, anonymous: usize, user: usize) {
        let mut moved = self.merged.remove(&anonymous).unwrap_or_default();
        moved.push(anonymous);
        let list = self.merged.entry(user).or_default();
        for id in moved {
            if list.len() < crate::runtime::merge::ALIASES_MAX {
                list.push(id);
                self.of[id] = Some(user);
            } else {
                self.of[id] = None;
            }
        }
    }
}

impl<F: FnMut(&TraceRecord), A: FnMut(&str, &Step)> VirtualClock<F, A> {
    fn step(&mut self, customer: usize, input: &Input) {
        if self.failed[customer] {
            return;
        }
        let effects = match self.engine.apply(&mut self.states[customer], input) {
            Ok(effects) => effects,
            Err(error) => {
                // The customer is isolated: one `error` record, and none of
                // its later inputs or timers run. Its half-changed state is
                // dropped (it is not counted as waiting anywhere).
                let state = &mut self.states[customer];
                let at = input.at().max(state.clock);
                (self.emit)(&TraceRecord::error(at, &state.id, &error));
                *state = CustomerState::new(std::mem::take(&mut state.id));
                self.failed[customer] = true;
                self.pushed[customer] = None;
                return;
            }
        };
        effects.records.iter().for_each(&mut self.emit);
        for (journey, step) in &effects.arrivals {
            (self.arrive)(journey, step);
        }
        if effects.wake_at != self.pushed[customer] {
            if let Some(due) = effects.wake_at {
                self.timers.push(Reverse((due, customer)));
            }
            self.pushed[customer] = effects.wake_at;
        }
    }

    /// Merges `anonymous` into `user` before an input at `at`
    /// ([`crate::runtime::merge::merge`]), unless it is already an alias
    /// or one of the two failed: its timers go on under `user`.
    fn merge(&mut self, anonymous: usize, user: usize, at: Millis) {
        let anonymous_resolved = self.aliases.resolve(anonymous);
        if anonymous_resolved != anonymous || anonymous == user || self.failed[anonymous] || self.failed[user] {
            return;
        }
        let id = self.states[anonymous].id.clone();
        let state = std::mem::replace(&mut self.states[anonymous], CustomerState::new(id));
        let records = crate::runtime::merge::merge(&mut self.states[user], state, at);
        records.iter().for_each(&mut self.emit);
        self.aliases.add(anonymous, user);
        self.pushed[anonymous] = None;
        let wake = self.states[user].next_wake();
        if wake != self.pushed[user] {
            if let Some(due) = wake {
                self.timers.push(Reverse((due, user)));
            }
            self.pushed[user] = wake;
        }
    }

    /// A segment broadcast (on line `line`): every customer seen so far who
    /// is in the segment at its time enters, in id order (the daemon's
    /// order: `runtime::broadcast`). Its id is its `messageId`, else the line.
    fn broadcast(&mut self, line: usize, broadcast: &Broadcast) {
        let bundle = self.engine.bundle().clone();
        let Some(segment) = broadcasts::segment_id(&bundle, &broadcast.segment) else {
            return;
        };
        let id = broadcast.message_id.clone().unwrap_or_else(|| format!("line-{line}"));
        debug_assert!((self.states.windows(2)).all(|w| broadcasts::visits_before(&w[0].id, &w[1].id)));
        for customer in 0..self.states.len() {
            if self.aliases.of[customer].is_some() || self.failed[customer] {
                continue;
            }
            let state = &self.states[customer];
            if broadcasts::is_known(state) && broadcasts::is_member(&bundle, state, segment, broadcast.at) {
                let input = broadcasts::input(&id, &broadcast.journey, &broadcast.properties, broadcast.at);
                self.step(customer, &input);
            }
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
    run_customer_to_end(engine, customer, inputs, until, &mut |_, _| {}).0
}

/// [`run_customer`], with the customer's state at the end (for the
/// position gauges of the statistics), handing arrivals at wait steps to
/// `arrive`.
pub fn run_customer_to_end(
    engine: &Engine,
    customer: &str,
    inputs: &[Input],
    until: Option<Millis>,
    arrive: &mut dyn FnMut(&str, &Step),
) -> (Vec<TraceRecord>, CustomerState) {
    let mut state = CustomerState::new(customer);
    let mut records = Vec::new();
    // The first failure ends the customer's run with an `error` record.
    let mut apply =
        |state: &mut CustomerState, input: &Input, records: &mut Vec<TraceRecord>| match engine.apply(state, input) {
            Ok(effects) => {
                records.extend(effects.records);
                for (journey, step) in &effects.arrivals {
                    arrive(journey, step);
                }
                true
            }
            Err(error) => {
                records.push(TraceRecord::error(input.at().max(state.clock), customer, &error));
                false
            }
        };
    for input in inputs {
        if !apply(&mut state, input, &mut records) {
            return (records, state);
        }
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
        if !apply(&mut state, &Input::Wake { at }, &mut records) {
            break;
        }
    }
    (records, state)
}
