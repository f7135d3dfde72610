//! The simulator: runs a compiled workspace over an event stream on a
//! virtual clock (no wall clock anywhere), deterministically.
//!
//! One global timeline: inputs in order of (time, customer id), and between
//! them every customer's timers in order of (time, customer id).
//! Lines come out in time order as they are produced; each customer's lines
//! keep their causal order.
//!
//! [`run_parallel`] runs the same timeline on several threads: customers
//! interact only through merges and broadcasts, so shards of customers
//! (merged ids together) run on their own clocks, every broadcast on each,
//! and their records, tagged with their place in the sequential order
//! ([`Key`]), are merged back into that order. `docs/runtime.md`, "The
//! simulator", states the order.

use crate::compile::bytecode::Value;
use crate::compile::bytecode::{Bundle, Trigger};
use crate::runtime::broadcast::{self as broadcasts, Broadcast};
use crate::runtime::input::{parse_call_str, Call};
use crate::runtime::trace::Step;
use crate::runtime::{CustomerState, Engine, Input, Millis, TraceRecord};
use crate::syntax::ast::Channel;
use rustc_hash::FxHashMap;
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

/// [`read_events`] with the parsing spread over `threads` threads: the
/// file is cut into chunks of whole lines, parsed in parallel, and put
/// together in file order, numbering customers and names as [`read_events`]
/// does (in order of first appearance), so the result is the same, and so
/// is the first error. Memory holds a few chunks of text at a time.
pub fn read_events_parallel(reader: impl std::io::Read, bundle: &Bundle, threads: usize) -> Result<Events, EventError> {
    if threads <= 1 {
        return read_events(std::io::BufReader::with_capacity(1 << 20, reader), bundle);
    }
    read_events_in_chunks(reader, bundle, threads, PARSE_CHUNK)
}

/// [`read_events_parallel`] in chunks of `chunk` bytes (more when a line is longer).
fn read_events_in_chunks(
    mut reader: impl std::io::Read,
    bundle: &Bundle,
    threads: usize,
    chunk: usize,
) -> Result<Events, EventError> {
    type Parsed = Result<Events, EventError>;
    let (chunks, jobs) = std::sync::mpsc::sync_channel::<(usize, usize, Vec<u8>)>(threads * 2);
    let jobs = std::sync::Mutex::new(jobs);
    let (results, parsed) = std::sync::mpsc::channel::<(usize, Parsed)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (jobs, results) = (&jobs, results.clone());
            scope.spawn(move || loop {
                let job = jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                let Ok((order, first, text)) = job else {
                    return;
                };
                let mut events = Events::default();
                let mut broadcasts = Vec::new();
                let result = for_each_call_from(
                    first,
                    text.as_slice(),
                    bundle,
                    |call| events.push(call),
                    |line, broadcast| broadcasts.push((line, broadcast)),
                )
                .map(|()| {
                    events.broadcasts = broadcasts;
                    events
                });
                if results.send((order, result)).is_err() {
                    return;
                }
            });
        }
        drop(results);
        // Parts arrive in any order; they are put together in file order.
        let mut events = Ok(Events::default());
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        let mut add = |(order, part): (usize, Parsed), events: &mut Parsed| {
            waiting.insert(order, part);
            while let Some(part) = waiting.remove(&next) {
                next += 1;
                match (&mut *events, part) {
                    (Ok(all), Ok(part)) => all.append(part),
                    (Ok(_), Err(error)) => *events = Err(error),
                    (Err(_), _) => {}
                }
            }
        };
        let mut order = 0;
        let mut first = 1;
        let mut carry = Vec::new();
        let mut unreadable = None;
        loop {
            let mut text = std::mem::take(&mut carry);
            text.reserve(chunk);
            let read = std::io::Read::read_to_end(&mut std::io::Read::take(&mut reader, chunk as u64), &mut text);
            let read = match read {
                Ok(read) => read,
                Err(error) => {
                    // After the whole lines read before it, as in one pass.
                    let whole = text.iter().rposition(|byte| *byte == b'\n').map_or(0, |end| end + 1);
                    text.truncate(whole);
                    let lines = text.iter().filter(|byte| **byte == b'\n').count();
                    unreadable = Some(EventError {
                        line: first + lines,
                        message: format!("cannot read: {error}"),
                    });
                    if !text.is_empty() {
                        let _ = chunks.send((order, first, text));
                    }
                    break;
                }
            };
            // Whole lines only; the rest goes with the next chunk.
            if read > 0 {
                match text.iter().rposition(|byte| *byte == b'\n') {
                    Some(end) => carry = text.split_off(end + 1),
                    None => {
                        carry = text;
                        continue;
                    }
                }
            }
            if text.is_empty() {
                break;
            }
            let lines = text.iter().filter(|byte| **byte == b'\n').count();
            if chunks.send((order, first, text)).is_err() {
                break;
            }
            order += 1;
            first += lines;
            while let Ok(part) = parsed.try_recv() {
                add(part, &mut events);
            }
            // Past the first error nothing more is needed.
            if events.is_err() {
                break;
            }
        }
        drop(chunks);
        for part in parsed {
            add(part, &mut events);
        }
        events.and_then(|events| unreadable.map_or(Ok(events), Err))
    })
}

/// The bytes of text a parsing thread takes at a time.
const PARSE_CHUNK: usize = 1 << 20;

/// Calls each line's call, or its segment broadcast (a trigger line naming
/// a `segment`: [`crate::runtime::broadcast::parse`]) with its line number.
fn for_each_call(
    reader: impl std::io::BufRead,
    bundle: &Bundle,
    each: impl FnMut(Call),
    each_broadcast: impl FnMut(usize, Broadcast),
) -> Result<(), EventError> {
    for_each_call_from(1, reader, bundle, each, each_broadcast)
}

/// [`for_each_call`] on lines numbered from `first`.
fn for_each_call_from(
    first: usize,
    mut reader: impl std::io::BufRead,
    bundle: &Bundle,
    mut each: impl FnMut(Call),
    mut each_broadcast: impl FnMut(usize, Broadcast),
) -> Result<(), EventError> {
    let mut line = String::new();
    for number in first.. {
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

/// Strings numbered in order of first appearance. Looked up by their text
/// with FxHash (the keys are the file's own ids and the schema's names, a
/// few bytes each; SipHash's resistance to chosen keys buys nothing for a
/// file the user runs on their own machine).
#[derive(Default)]
struct Interner {
    strings: Vec<String>,
    numbers: FxHashMap<String, u32>,
}

impl Interner {
    fn number(&mut self, string: String) -> u32 {
        if let Some(number) = self.numbers.get(string.as_str()) {
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
    /// The input, by value: its values move into it, uncopied.
    fn input(self, names: &Interner) -> Input {
        let fields = (self.fields.into_vec().into_iter())
            .map(|(name, value)| (names.get(name), value))
            .collect();
        let message_id = self.message_id.map(String::from);
        match self.kind {
            PendingKind::Identify => Input::Identify {
                traits: fields,
                subscriptions: self.subscriptions.into_vec().into_iter().collect(),
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

    /// Appends the inputs and broadcasts of the lines after this one's,
    /// numbering its customers and names on from this one's.
    fn append(&mut self, later: Events) {
        let customers: Vec<u32> = (later.customers.strings.into_iter())
            .map(|id| self.customers.number(id))
            .collect();
        let names: Vec<u32> = (later.names.strings.into_iter())
            .map(|name| self.names.number(name))
            .collect();
        let rename =
            |fields: &mut [(u32, Value)]| fields.iter_mut().for_each(|(name, _)| *name = names[*name as usize]);
        self.inputs.reserve(later.inputs.len());
        for mut pending in later.inputs {
            pending.customer = customers[pending.customer as usize];
            pending.merge = pending.merge.map(|other| customers[other as usize]);
            pending.kind = match pending.kind {
                PendingKind::Identify => PendingKind::Identify,
                PendingKind::Track(event) => PendingKind::Track(names[event as usize]),
                PendingKind::Trigger(journey) => PendingKind::Trigger(names[journey as usize]),
            };
            rename(&mut pending.fields);
            rename(&mut pending.fill);
            self.inputs.push(pending);
        }
        self.broadcasts.extend(later.broadcasts);
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
    mut emit: impl FnMut(&TraceRecord),
    mut arrive: impl FnMut(&str, &Step),
) -> Vec<CustomerState> {
    let run = Timeline::new(bundle, events, options);
    let customers = run.ids.len();
    let mut clock = VirtualClock::new(
        run.engine.clone(),
        run.ids.into_iter().map(CustomerState::new).collect(),
        (0..customers as u32).collect(),
        |_, record: &TraceRecord| emit(record),
        |_, journey: &str, step: &Step| arrive(journey, step),
    );
    clock.run((0..).zip(run.inputs), &run.broadcasts, &run.names, options.until);
    clock.states
}

/// A callback for each arrival at a wait step (its journey and step).
pub type Arrive<'a> = &'a mut dyn FnMut(&str, &Step);

/// The most worker threads [`run_parallel`] starts by default.
pub const THREADS_DEFAULT_MAX: usize = 8;

/// The worker threads to run on when none is asked for: the machine's
/// cores, at most [`THREADS_DEFAULT_MAX`].
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |cores| cores.get())
        .min(THREADS_DEFAULT_MAX)
}

/// [`run_streaming_with_arrivals`] on `threads` worker threads, with
/// exactly its output: the same records, arrivals and final states, in the
/// same order.
///
/// Customers are sharded over the workers; customers an input merges
/// (`Call::merge`, transitively) share one. Each worker runs the simulator's
/// clock over its customers, every broadcast included, and hands each
/// record to `encode` on its own thread, which may write bytes into the
/// buffer it is given and returns what `emit` needs. The calling thread
/// merges the workers' records by their place in the sequential order
/// ([`Key`]) and calls `emit` with the value and the bytes `encode` wrote,
/// and `arrive` (when given) with each arrival at a wait step.
/// One thread (or fewer) runs [`run_streaming_with_arrivals`] itself.
pub fn run_parallel<T: Send>(
    bundle: Arc<Bundle>,
    events: Events,
    options: Options,
    threads: usize,
    encode: impl Fn(&TraceRecord, &mut Vec<u8>) -> T + Sync,
    mut emit: impl FnMut(T, &[u8]),
    mut arrive: Option<Arrive<'_>>,
) -> Vec<CustomerState> {
    if threads <= 1 {
        let mut bytes = Vec::with_capacity(512);
        let mut arrive = |journey: &str, step: &Step| {
            if let Some(arrive) = arrive.as_mut() {
                arrive(journey, step)
            }
        };
        return run_streaming_with_arrivals(
            bundle,
            events,
            options,
            |record| {
                bytes.clear();
                let value = encode(record, &mut bytes);
                emit(value, &bytes);
            },
            &mut arrive,
        );
    }
    let run = Timeline::new(bundle, events, options);
    let customers = run.ids.len();
    let shard = shards(customers, &run.inputs, threads);
    // Each shard's customers in rank order, and each customer's number in
    // its shard's clock.
    let mut ranks: Vec<Vec<u32>> = vec![Vec::new(); threads];
    let mut local = vec![0u32; customers];
    for (rank, shard) in shard.iter().enumerate() {
        local[rank] = ranks[*shard as usize].len() as u32;
        ranks[*shard as usize].push(rank as u32);
    }
    let mut states: Vec<Vec<CustomerState>> = ranks.iter().map(|ranks| Vec::with_capacity(ranks.len())).collect();
    for (rank, id) in run.ids.into_iter().enumerate() {
        states[shard[rank] as usize].push(CustomerState::new(id));
    }
    let mut inputs: Vec<Vec<(u64, Pending)>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, mut pending) in (0..).zip(run.inputs) {
        let shard = shard[pending.customer as usize] as usize;
        pending.customer = local[pending.customer as usize];
        pending.merge = pending.merge.map(|other| local[other as usize]);
        inputs[shard].push((index, pending));
    }
    drop(local);
    let arrivals = arrive.is_some();
    let (engine, broadcasts, names, encode) = (&run.engine, &run.broadcasts, &run.names, &encode);
    let until = options.until;
    let shard_states = std::thread::scope(|scope| {
        let mut receivers = Vec::new();
        let mut workers = Vec::new();
        for ((states, ranks), inputs) in states.into_iter().zip(ranks).zip(inputs) {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch<T>>(BATCHES_QUEUED);
            receivers.push(receiver);
            workers.push(scope.spawn(move || {
                let out = std::cell::RefCell::new(Outbox {
                    batch: Batch::default(),
                    sender: Some(sender),
                    last: Key::default(),
                });
                let mut clock = VirtualClock::new(
                    engine.clone(),
                    states,
                    ranks,
                    |key, record: &TraceRecord| {
                        let mut out = out.borrow_mut();
                        let value = encode(record, &mut out.batch.bytes);
                        let end = out.batch.bytes.len();
                        out.push(key, Item::Record(value, end));
                    },
                    |key, journey: &str, step: &Step| {
                        if arrivals {
                            out.borrow_mut()
                                .push(key, Item::Arrival(journey.to_string(), step.clone()));
                        }
                    },
                );
                clock.run(inputs.into_iter(), broadcasts, names, until);
                let states = std::mem::take(&mut clock.states);
                drop(clock);
                out.into_inner().send();
                states
            }));
        }
        merge_batches(receivers, &mut emit, &mut arrive);
        (workers.into_iter())
            .map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect::<Vec<_>>()
    });
    // Back in rank order: each shard's states are in rank order.
    let mut shard_states: Vec<_> = shard_states.into_iter().map(Vec::into_iter).collect();
    (shard.iter())
        .map(|shard| shard_states[*shard as usize].next().expect("one state per customer"))
        .collect()
}

/// The shard of each customer (by rank): customers that merges join share
/// one (union-find over the inputs' merge pairs), each group going to the
/// shard of its first customer's rank, modulo `threads`.
fn shards(customers: usize, inputs: &[Pending], threads: usize) -> Vec<u32> {
    let mut parent: Vec<u32> = (0..customers as u32).collect();
    fn root(parent: &mut [u32], mut customer: u32) -> u32 {
        while parent[customer as usize] != customer {
            let up = parent[parent[customer as usize] as usize];
            parent[customer as usize] = up;
            customer = up;
        }
        customer
    }
    for pending in inputs {
        if let Some(other) = pending.merge {
            let (a, b) = (root(&mut parent, pending.customer), root(&mut parent, other));
            // The smaller rank is the root: a group's root is its first customer.
            parent[a.max(b) as usize] = a.min(b);
        }
    }
    (0..customers as u32)
        .map(|customer| root(&mut parent, customer) % threads as u32)
        .collect()
}

/// A record's place in the sequential run's order: the order
/// [`run_streaming_with_arrivals`] produces records in is the order of
/// their keys, and every customer's records come from one shard in that
/// order, so merging the shards' streams by key gives it back.
///
/// Per instant: the inputs (in their sorted order), then the broadcasts
/// (in their sorted order, each visiting customers in rank order), then the
/// wake-ups due (in rank order; one customer's wake-ups at one instant in
/// the order they ran). A wake-up is never due before the step that set it
/// (checked in debug builds: a worker's keys never go down).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    at: Millis,
    phase: Phase,
    /// An input's place in the sorted inputs; a broadcast's in the sorted
    /// broadcasts; a wake-up's customer rank.
    first: u64,
    /// A broadcast's customer rank.
    second: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    #[default]
    Input,
    Broadcast,
    Wake,
}

/// Records a worker has produced, in key order, with the bytes its
/// `encode` wrote for them.
struct Batch<T> {
    items: Vec<(Key, Item<T>)>,
    bytes: Vec<u8>,
}

impl<T> Default for Batch<T> {
    fn default() -> Batch<T> {
        Batch {
            items: Vec::with_capacity(BATCH_ITEMS),
            bytes: Vec::with_capacity(BATCH_ITEMS * 256),
        }
    }
}

enum Item<T> {
    /// `encode`'s value and where its bytes end in the batch.
    Record(T, usize),
    Arrival(String, Step),
}

/// Records per batch a worker sends.
const BATCH_ITEMS: usize = 1024;
/// Batches a worker may have sent ahead of the merge.
const BATCHES_QUEUED: usize = 32;

/// A worker's batch being filled, and where it goes.
struct Outbox<T> {
    batch: Batch<T>,
    /// `None` once the merge stopped listening.
    sender: Option<std::sync::mpsc::SyncSender<Batch<T>>>,
    last: Key,
}

impl<T> Outbox<T> {
    fn push(&mut self, key: Key, item: Item<T>) {
        debug_assert!(
            key >= self.last,
            "a worker's keys go down: {key:?} after {:?}",
            self.last
        );
        self.last = key;
        self.batch.items.push((key, item));
        if self.batch.items.len() == BATCH_ITEMS {
            self.send();
        }
    }

    fn send(&mut self) {
        if self.batch.items.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if let Some(sender) = &self.sender {
            if sender.send(batch).is_err() {
                self.sender = None;
            }
        }
    }
}

/// Merges the workers' batches by key, calling `emit` and `arrive` in the
/// sequential order.
fn merge_batches<T>(
    receivers: Vec<std::sync::mpsc::Receiver<Batch<T>>>,
    emit: &mut impl FnMut(T, &[u8]),
    arrive: &mut Option<Arrive<'_>>,
) {
    struct Head<T> {
        items: std::iter::Peekable<std::vec::IntoIter<(Key, Item<T>)>>,
        bytes: Vec<u8>,
        start: usize,
    }
    let next = |receiver: &std::sync::mpsc::Receiver<Batch<T>>| {
        receiver.recv().ok().map(|batch| Head {
            items: batch.items.into_iter().peekable(),
            bytes: batch.bytes,
            start: 0,
        })
    };
    let mut heads: Vec<Option<Head<T>>> = receivers.iter().map(next).collect();
    loop {
        // The stream with the least key, and the least key of the others.
        let peeked: Vec<(Key, usize)> = (heads.iter_mut().enumerate())
            .filter_map(|(worker, head)| Some((head.as_mut()?.items.peek()?.0, worker)))
            .collect();
        let Some(&(_, worker)) = peeked.iter().min() else {
            return;
        };
        let bound = (peeked.iter())
            .filter(|(_, other)| *other != worker)
            .map(|(key, _)| *key)
            .min();
        // That stream's records up to the next of another stream (the
        // least record at least: two streams never share a key, and if they
        // did the merge would still go on).
        let mut first = true;
        loop {
            let head = heads[worker].as_mut().expect("a stream with records");
            let wanted = |(key, _): &(Key, Item<T>)| first || bound.is_none_or(|bound| *key < bound);
            let item = head.items.next_if(wanted);
            first = false;
            match item {
                Some((_, Item::Record(value, end))) => {
                    emit(value, &head.bytes[head.start..end]);
                    head.start = end;
                }
                Some((_, Item::Arrival(journey, step))) => {
                    if let Some(arrive) = arrive.as_mut() {
                        arrive(&journey, &step);
                    }
                }
                None if head.items.peek().is_none() => {
                    heads[worker] = next(&receivers[worker]);
                    if heads[worker].is_none() {
                        break;
                    }
                }
                None => break,
            }
        }
    }
}

/// The sequential order of a run, before any of it runs: the engine (with
/// its horizon), the customers' ids in rank (id) order, the inputs in
/// their order with customers numbered by rank, the broadcasts in theirs.
struct Timeline {
    engine: Engine,
    ids: Vec<String>,
    inputs: Vec<Pending>,
    broadcasts: Vec<(usize, Broadcast)>,
    names: Interner,
}

impl Timeline {
    fn new(bundle: Arc<Bundle>, events: Events, options: Options) -> Timeline {
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
        // Customers are ranked in id order, so ties between customers never
        // depend on the order of the file.
        let mut by_id: Vec<(String, u32)> = customers.strings.into_iter().zip(0..).collect();
        by_id.sort_unstable();
        let mut rank = vec![0u32; by_id.len()];
        (by_id.iter().zip(0..)).for_each(|((_, number), position)| rank[*number as usize] = position);
        for input in &mut inputs {
            input.customer = rank[input.customer as usize];
            input.merge = input.merge.map(|other| rank[other as usize]);
        }
        // Stable: one customer's simultaneous inputs keep their file order.
        inputs.sort_by_key(|input| (input.at, input.customer));
        Timeline {
            engine: engine.with_horizon(horizon),
            ids: by_id.into_iter().map(|(id, _)| id).collect(),
            inputs,
            broadcasts: pending_broadcasts,
            names,
        }
    }
}

/// The simulator's clock: customers' states and a heap of their wake-ups.
/// It runs all the customers ([`run_streaming_with_arrivals`]) or one
/// shard of them ([`run_parallel`]): customers are numbered in its own
/// order (their rank order), `ranks` gives their ranks in the whole run.
struct VirtualClock<F, A> {
    engine: Engine,
    states: Vec<CustomerState>,
    /// Each customer's rank among all the run's customers.
    ranks: Vec<u32>,
    /// `(due, customer)`; an entry is stale when the customer's next
    /// wake-up has moved since it was pushed.
    timers: BinaryHeap<Reverse<(Millis, usize)>>,
    /// The due time last pushed per customer (no duplicate heap entries).
    pushed: Vec<Option<Millis>>,
    /// Customers an input failed for: skipped from then on.
    failed: Vec<bool>,
    aliases: Aliases,
    /// The place of the step running in the sequential order.
    key: Key,
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

impl<F: FnMut(Key, &TraceRecord), A: FnMut(Key, &str, &Step)> VirtualClock<F, A> {
    fn new(engine: Engine, states: Vec<CustomerState>, ranks: Vec<u32>, emit: F, arrive: A) -> Self {
        let customers = states.len();
        VirtualClock {
            engine,
            states,
            ranks,
            timers: BinaryHeap::new(),
            pushed: vec![None; customers],
            failed: vec![false; customers],
            aliases: Aliases::new(customers),
            key: Key::default(),
            emit,
            arrive,
        }
    }

    /// Runs the inputs (each with its place in the sorted inputs, its
    /// customers numbered by this clock) and every broadcast, then the
    /// wake-ups until none is left or `until`.
    fn run(
        &mut self,
        inputs: impl Iterator<Item = (u64, Pending)>,
        broadcasts: &[(usize, Broadcast)],
        names: &Interner,
        until: Option<Millis>,
    ) {
        let mut pending_broadcasts = (0..).zip(broadcasts).peekable();
        // By value: each input's memory is free for customer state once it ran.
        for (index, mut pending) in inputs {
            while let Some((order, (line, broadcast))) = pending_broadcasts.next_if(|(_, (_, b))| b.at < pending.at) {
                self.fire_timers(|due| due < broadcast.at);
                self.broadcast(order, *line, broadcast);
            }
            self.fire_timers(|due| due < pending.at);
            self.key = Key {
                at: pending.at,
                phase: Phase::Input,
                first: index,
                second: 0,
            };
            let customer = self.aliases.resolve(pending.customer as usize);
            if let Some(other) = pending.merge {
                self.merge(other as usize, customer, pending.at);
            }
            let fill = std::mem::take(&mut pending.fill);
            let input = pending.input(names);
            if !fill.is_empty() {
                let fill = (fill.into_vec().into_iter())
                    .map(|(name, value)| (names.get(name), value))
                    .collect();
                let profile = &self.states[customer].profile;
                if let Some(identify) = crate::runtime::input::context_fill(profile, &fill, &input) {
                    self.step(customer, &identify);
                }
            }
            self.step(customer, &input);
        }
        for (order, (line, broadcast)) in pending_broadcasts {
            self.fire_timers(|due| due < broadcast.at);
            self.broadcast(order, *line, broadcast);
        }
        self.fire_timers(|due| until.is_none_or(|until| due <= until));
    }

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
                (self.emit)(self.key, &TraceRecord::error(at, &state.id, &error));
                *state = CustomerState::new(std::mem::take(&mut state.id));
                self.failed[customer] = true;
                self.pushed[customer] = None;
                return;
            }
        };
        let key = self.key;
        effects.records.iter().for_each(|record| (self.emit)(key, record));
        for (journey, step) in &effects.arrivals {
            (self.arrive)(key, journey, step);
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
        let key = self.key;
        records.iter().for_each(|record| (self.emit)(key, record));
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

    /// A segment broadcast (on line `line`, `order`th of the sorted
    /// broadcasts): every customer seen so far who is in the segment at its
    /// time enters, in id order (the daemon's order: `runtime::broadcast`).
    /// Its id is its `messageId`, else the line.
    fn broadcast(&mut self, order: u64, line: usize, broadcast: &Broadcast) {
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
                self.key = Key {
                    at: broadcast.at,
                    phase: Phase::Broadcast,
                    first: order,
                    second: self.ranks[customer].into(),
                };
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
                self.key = Key {
                    at: due,
                    phase: Phase::Wake,
                    first: self.ranks[customer].into(),
                    second: 0,
                };
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

#[cfg(test)]
mod tests {
    use super::*;

    const WORKSPACE: &str = r#"
customer { plan: "free" | "pro"? }
event signed_in { source: string? }
segment pro = customer.plan == "pro"
message hello push { body "hello" }
journey welcome {
  trigger signed_in
  send hello
}
journey offer {
  trigger api { code: string }
  send hello
}
"#;

    fn bundle() -> Bundle {
        let mut sources = crate::source::SourceMap::new();
        sources.add("w.journey", WORKSPACE);
        let outcome = crate::check::check_workspace(&sources, &crate::workspace::MemoryFiles::default());
        crate::compile::compile(&outcome.checked.expect("checks"))
    }

    fn lines(customers: usize) -> Vec<String> {
        let mut lines = Vec::new();
        for customer in 0..customers {
            let at = format!("2026-03-01T{:02}:00:00Z", customer % 24);
            lines.push(format!(
                r#"{{"type":"identify","userId":"u{}","traits":{{"plan":"{}"}},"timestamp":"{at}"}}"#,
                customers - customer,
                ["free", "pro"][customer % 2]
            ));
            if customer % 7 == 0 {
                lines.push(String::new());
                lines.push(format!(
                    r#"{{"type":"trigger","journey":"offer","segment":"pro","properties":{{"code":"c{customer}"}},"timestamp":"{at}"}}"#
                ));
            }
            lines.push(format!(
                r#"{{"type":"track","anonymousId":"a{customer}","userId":"u{}","event":"signed_in","properties":{{"source":"s{}"}},"timestamp":"{at}"}}"#,
                customer / 2,
                customer % 5
            ));
        }
        lines
    }

    /// What [`read_events`] gives, as text: numbered customers and names,
    /// inputs, broadcasts' lines.
    fn shown(events: &Events) -> String {
        let inputs: Vec<_> = (events.inputs.iter())
            .map(|p| {
                (
                    p.customer,
                    p.at,
                    p.merge,
                    p.fields.len(),
                    p.fill.len(),
                    p.message_id.clone(),
                )
            })
            .collect();
        let kinds: Vec<_> = (events.inputs.iter())
            .map(|p| match p.kind {
                PendingKind::Identify => None,
                PendingKind::Track(name) | PendingKind::Trigger(name) => Some(name),
            })
            .collect();
        let fields: Vec<_> = (events.inputs.iter())
            .flat_map(|p| p.fields.iter().map(|(name, value)| (*name, format!("{value:?}"))))
            .collect();
        let broadcasts: Vec<_> = (events.broadcasts.iter())
            .map(|(line, b)| (*line, b.at, b.segment.clone()))
            .collect();
        format!(
            "{:?}\n{:?}\n{inputs:?}\n{kinds:?}\n{fields:?}\n{broadcasts:?}",
            events.customers.strings, events.names.strings
        )
    }

    /// Chunks of a few lines, parsed on several threads, put together the
    /// same as one pass: the same numbering, inputs and broadcast lines.
    #[test]
    fn parsing_in_chunks_gives_what_one_pass_gives() {
        let bundle = bundle();
        let text = lines(60).join("\n");
        let expected = shown(&read_events(text.as_bytes(), &bundle).expect("parses"));
        for (threads, chunk) in [(2, 1), (2, 300), (3, 1000), (4, 5000), (2, 1 << 20)] {
            let got = read_events_in_chunks(text.as_bytes(), &bundle, threads, chunk).expect("parses");
            assert_eq!(shown(&got), expected, "{threads} threads, chunks of {chunk} bytes");
        }
    }

    /// The error is the first bad line's, wherever the chunks are cut.
    #[test]
    fn parsing_in_chunks_reports_the_first_bad_line() {
        let bundle = bundle();
        let mut lines = lines(40);
        lines[57] = r#"{"type":"track","userId":"x","event":"Nope","timestamp":"2026-03-01T00:00:00Z"}"#.to_string();
        lines[90] = "not json".to_string();
        let text = lines.join("\n");
        let expected = read_events(text.as_bytes(), &bundle)
            .err()
            .expect("an error")
            .to_string();
        assert!(expected.starts_with("line 58: "), "{expected}");
        for (threads, chunk) in [(2, 1), (3, 700), (2, 1 << 20)] {
            let got = read_events_in_chunks(text.as_bytes(), &bundle, threads, chunk)
                .err()
                .expect("an error");
            assert_eq!(got.to_string(), expected, "{threads} threads, chunks of {chunk} bytes");
        }
    }

    /// A reader that fails after `left` bytes.
    struct Failing<'a> {
        text: &'a [u8],
        left: usize,
    }

    impl std::io::Read for Failing<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("the disk went away"));
            }
            let n = buffer.len().min(self.left).min(self.text.len());
            buffer[..n].copy_from_slice(&self.text[..n]);
            (self.text, self.left) = (&self.text[n..], self.left - n);
            Ok(n)
        }
    }

    /// A read error counts after the lines read before it: a bad line
    /// before it is the error, else the read error is.
    #[test]
    fn parsing_in_chunks_reports_a_read_error_after_the_lines_before_it() {
        let bundle = bundle();
        let mut lines = lines(40);
        let good = lines.join("\n");
        lines[5] = "not json".to_string();
        let bad = lines.join("\n");
        for text in [&good, &bad] {
            let left = text.len() / 2;
            let one_pass = |chunk: usize| {
                let reader = Failing {
                    text: text.as_bytes(),
                    left,
                };
                if chunk == 0 {
                    read_events(std::io::BufReader::with_capacity(64, reader), &bundle)
                } else {
                    read_events_in_chunks(reader, &bundle, 2, chunk)
                }
                .err()
                .expect("an error")
                .to_string()
            };
            let expected = one_pass(0);
            let wanted = if std::ptr::eq(text, &bad) {
                "line 6: "
            } else {
                "cannot read"
            };
            assert!(expected.contains(wanted), "{expected}");
            for chunk in [1, 500, 1 << 20] {
                assert_eq!(one_pass(chunk), expected, "chunks of {chunk}");
            }
        }
    }
}
