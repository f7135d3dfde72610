//! A seeded simulation of the daemon's pipeline (tests only): intake
//! validation, the commit thread, the timer index and the outbox, on a
//! simulated clock and a real sled store on disk, with injected faults —
//! a crash at commit points, clock jumps forward and backwards, hostile
//! calls, duplicate `messageId`s, erasure mid-flight, and one customer
//! whose every input fails.
//!
//! **Invariants, checked after every step** (`docs/testing.md`):
//! - no acknowledged event is lost or applied twice, across crashes;
//! - every send has its own id, and a customer has exactly one send of
//!   `greet` per applied login (none re-done under a new id after a crash);
//! - every due timer has fired once a wake-up pass has run;
//! - the failing customer holds back none of the others.
//!
//! Every choice comes from one PRNG seeded with a `u64`, so a failing seed
//! replays exactly: the panic message names the seed and the step.

use super::commit::{self, Committer, Interpreter, SharedRuntime};
use super::sinks::{JsonlSink, Sink, SinkSpec};
use super::store::{Cursors, Store, StoreOptions};
use super::{faults, outbox, reload, start_commits};
use crate::runtime::input::{parse_received_call, Call};
use crate::runtime::{ApplyError, CustomerState, Effects, Input, Millis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

const PARTITION_NONE: i32 = super::kv::pg::PARTITION_NONE;

const WORKSPACE: &str = r#"
event login
message hi push { body "hi" }
message nudge push { body "come back" }
journey greet {
  trigger login
  entry always
  send hi
}
journey idle {
  trigger inactive 2h
  entry always
  send nudge
}
"#;

/// Customers c0..c5; `c5` fails on every input (its inputs are held).
const CUSTOMERS: usize = 6;
const POISONED: &str = "c5";
const START: Millis = 1_772_582_400_000; // 2026-03-04T00:00:00Z
const FUTURE_MAX: Millis = 86_400_000;

/// The real engine, except that one customer's every input fails as an
/// interpreter error would.
struct Poisoned {
    inner: Arc<dyn Interpreter>,
}

impl Interpreter for Poisoned {
    fn apply(&self, state: &mut CustomerState, input: &Input) -> Result<Effects, ApplyError> {
        if state.id == POISONED {
            return Err(ApplyError::Internal("injected failure".into()));
        }
        self.inner.apply(state, input)
    }

    fn migrate(&self, state: &mut CustomerState, now: Millis) -> usize {
        self.inner.migrate(state, now)
    }
}

/// A running pipeline over one data directory: the store, the commit
/// thread, and a JSONL sink driven one round at a time.
struct Pipeline {
    store: Store,
    committer: Committer,
    committed: tokio::sync::watch::Receiver<u64>,
    metrics: Arc<super::metrics::Metrics>,
    thread: std::thread::JoinHandle<()>,
    route: Sink,
    sink: JsonlSink,
    cursor: u64,
}

fn open(data: &Path, workspace: &Path) -> Pipeline {
    let store = Store::open(&data.join("store"), &StoreOptions::default()).expect("open the store");
    let bundle = reload::load_bundle(workspace).expect("the workspace loads");
    let mut runtime = reload::build_runtime(&store, bundle, false).expect("runtime");
    runtime.interpreter = Arc::new(Poisoned {
        inner: runtime.interpreter.clone(),
    });
    let runtime: SharedRuntime = Arc::new(RwLock::new(Arc::new(runtime)));
    let route = Sink {
        channel: None,
        spec: SinkSpec::Jsonl(data.join("sends.jsonl")),
    };
    let (sink, tail) = JsonlSink::open(&data.join("sends.jsonl")).expect("open the JSONL sink");
    let cursor = outbox::start_cursor(&store, &route.name(), tail).get(PARTITION_NONE);
    // As the daemon chooses it: after every number the store or a sink has seen.
    let highest_seen = store.last_outbox_seq().expect("last seq").unwrap_or(0).max(cursor);
    let next_seq = store.next_seq().expect("next seq").unwrap_or(1).max(highest_seen + 1);
    let commits = start_commits(
        &store,
        &runtime,
        next_seq,
        faults::FaultPolicy::default(),
        None,
        Default::default(),
    )
    .expect("commits");
    Pipeline {
        store,
        committer: commits.committer,
        committed: commits.committed,
        metrics: commits.published.metrics.clone(),
        thread: commits.thread,
        route,
        sink,
        cursor,
    }
}

impl Pipeline {
    fn stop(self, tokio: &tokio::runtime::Runtime) {
        tokio.block_on(commit::stop(&self.committer));
        drop(self.committer);
        let _ = self.thread.join();
        drop(self.store);
    }
}

/// Copies a directory tree (the state a kill -9 leaves once every
/// acknowledged group is flushed and nothing else is being written).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// What the test knows was acknowledged.
#[derive(Default)]
struct Model {
    /// Acknowledged unique logins per customer since its last erasure.
    logins: HashMap<String, u64>,
    /// Every messageId acknowledged (per customer, since its last erasure).
    /// With the event time each was acknowledged at.
    message_ids: HashMap<String, Vec<(String, Millis)>>,
    /// Acknowledged inputs of the failing customer (held, never applied).
    held: u64,
    /// Sends of a customer up to this sequence number were before its
    /// erasure (the JSONL file keeps them until the next compaction).
    erased_through: HashMap<String, u64>,
}

struct Simulation {
    seed: u64,
    rng: StdRng,
    now: Millis,
    /// The latest clock reading so far (the clock also jumps back).
    latest: Millis,
    step: usize,
    next_message: u64,
    model: Model,
    root: tempfile::TempDir,
    workspace: PathBuf,
    pipeline: Option<Pipeline>,
    tokio: tokio::runtime::Runtime,
    schema: crate::check::Schema,
    log: Vec<String>,
}

impl Simulation {
    fn new(seed: u64) -> Simulation {
        let root = tempfile::tempdir().expect("tempdir");
        let workspace = root.path().join("workspace");
        std::fs::create_dir_all(&workspace).expect("mkdir");
        std::fs::write(workspace.join("w.journey"), WORKSPACE).expect("write");
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        let pipeline = open(&root.path().join("data"), &workspace);
        let schema = reload::load_bundle(&workspace).expect("loads").schema;
        Simulation {
            seed,
            rng: StdRng::seed_from_u64(seed),
            now: START,
            latest: START,
            step: 0,
            next_message: 0,
            model: Model::default(),
            root,
            workspace,
            pipeline: Some(pipeline),
            tokio,
            schema,
            log: Vec::new(),
        }
    }

    fn pipeline(&self) -> &Pipeline {
        self.pipeline.as_ref().expect("running")
    }

    fn fail(&self, what: String) -> ! {
        let tail = self
            .log
            .iter()
            .rev()
            .take(8)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ");
        panic!(
            "simulation seed {} failed at step {}: {what}\n  last steps:\n  {tail}\n  replay: JOURNEYC_VOPR_SEED={} cargo test --lib daemon::vopr",
            self.seed, self.step, self.seed
        );
    }

    fn customer(&mut self) -> String {
        format!("c{}", self.rng.gen_range(0..CUSTOMERS))
    }

    /// One call's JSON: valid, a re-sent duplicate, or hostile.
    fn call_json(&mut self) -> (serde_json::Value, bool) {
        let customer = self.customer();
        let stamp = |at: Millis| crate::runtime::trace::format_time(at);
        let valid_at = self.now - self.rng.gen_range(0..60_000);
        match self.rng.gen_range(0..20) {
            0 => (
                serde_json::json!({"type": "track", "userId": "x".repeat(300), "event": "login",
                    "timestamp": stamp(valid_at), "messageId": "h1"}),
                false,
            ),
            1 => (
                serde_json::json!({"type": "track", "userId": customer, "event": "login",
                    "timestamp": stamp(self.now + 3 * FUTURE_MAX), "messageId": "h2"}),
                false,
            ),
            2 => (
                serde_json::json!({"type": "track", "userId": customer, "event": "login",
                    "timestamp": "1969-12-31T23:59:59Z", "messageId": "h3"}),
                false,
            ),
            3 => (
                serde_json::json!({"type": "track", "userId": format!("c\u{0}{customer}"), "event": "login",
                    "timestamp": stamp(valid_at), "messageId": "h4"}),
                false,
            ),
            4 => (
                serde_json::json!({"type": "track", "userId": customer, "event": "login",
                    "timestamp": stamp(valid_at), "messageId": "m".repeat(400)}),
                false,
            ),
            5 => {
                // A re-sent call: same messageId as an acknowledged one.
                // Only within the dedupe window (7 days of the customer's
                // event time; 6 here, against the latest clock reading).
                let window_start = self.latest - 6 * 86_400_000;
                let previous: Vec<String> = (self.model.message_ids.get(&customer).into_iter().flatten())
                    .filter(|(_, at)| *at >= window_start)
                    .map(|(id, _)| id.clone())
                    .collect();
                match (!previous.is_empty()).then_some(previous) {
                    Some(ids) => {
                        let id = ids[self.rng.gen_range(0..ids.len())].clone();
                        (
                            serde_json::json!({"type": "track", "userId": customer, "event": "login",
                            "timestamp": stamp(valid_at), "messageId": id}),
                            true,
                        )
                    }
                    None => self.fresh(customer, valid_at),
                }
            }
            _ => self.fresh(customer, valid_at),
        }
    }

    fn fresh(&mut self, customer: String, at: Millis) -> (serde_json::Value, bool) {
        self.next_message += 1;
        let id = format!("m{}", self.next_message);
        let stamp = crate::runtime::trace::format_time(at);
        (
            serde_json::json!({"type": "track", "userId": customer, "event": "login", "timestamp": stamp, "messageId": id}),
            true,
        )
    }

    fn ingest(&mut self) {
        let mut calls: Vec<Call> = Vec::new();
        for _ in 0..self.rng.gen_range(1..4) {
            let (json, should_pass) = self.call_json();
            match parse_received_call(&json, &self.schema, self.now, FUTURE_MAX) {
                Ok(call) if should_pass => calls.push(call),
                Ok(_) => self.fail(format!("a hostile call was accepted: {json}")),
                Err(_) if should_pass => self.fail(format!("a valid call was refused: {json}")),
                Err(_) => {}
            }
        }
        if calls.is_empty() {
            return;
        }
        self.log.push(format!(
            "ingest {:?}",
            calls
                .iter()
                .map(|c| (c.customer.as_str(), c.input.message_id().unwrap_or("")))
                .collect::<Vec<_>>()
        ));
        let result = self.tokio.block_on(self.pipeline().committer.ingest(calls.clone()));
        match result {
            Ok(()) => {
                for call in calls {
                    let id = call.input.message_id().unwrap_or_default().to_string();
                    let ids = self.model.message_ids.entry(call.customer.clone()).or_default();
                    if ids.iter().any(|(known, _)| *known == id) {
                        continue;
                    }
                    ids.push((id, call.input.at()));
                    if call.customer == POISONED {
                        self.model.held += 1;
                    } else {
                        *self.model.logins.entry(call.customer).or_default() += 1;
                    }
                }
            }
            Err(error) => self.fail(format!("ingest refused: {error}")),
        }
    }

    /// One full timer pass at the simulated clock, as the timer task does.
    fn wake(&mut self) {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let due = (self.pipeline().store)
                .due_timers_after(after.as_deref(), self.now, 64)
                .expect("due timers");
            let Some(last) = due.last() else { break };
            after = Some(last.key());
            self.log.push(format!("wake {} entries at {}", due.len(), self.now));
            if let Err(error) = self.tokio.block_on(self.pipeline().committer.wake(due)) {
                self.fail(format!("wake refused: {error}"));
            }
        }
    }

    fn erase(&mut self) {
        let customer = self.customer();
        self.log.push(format!("erase {customer}"));
        match self.tokio.block_on(self.pipeline().committer.erase(customer.clone())) {
            Ok(_) => {
                let through = self.sends().keys().next_back().copied().unwrap_or(0);
                self.model.erased_through.insert(customer.clone(), through);
                self.model.logins.remove(&customer);
                self.model.message_ids.remove(&customer);
                if customer == POISONED {
                    self.model.held = 0;
                }
            }
            Err(error) => self.fail(format!("erase refused: {error}")),
        }
    }

    /// kill -9 now: every acknowledged group is flushed and nothing is
    /// being written, so a copy of the data directory is what the kill
    /// leaves; a new pipeline opens it at the same path.
    fn crash(&mut self, at: &str) {
        let data = self.root.path().join("data");
        let copy = self.root.path().join("crash");
        copy_dir(&data, &copy);
        self.log.push(format!("crash {at}"));
        if let Some(old) = self.pipeline.take() {
            old.stop(&self.tokio);
        }
        std::fs::remove_dir_all(&data).expect("remove the crashed directory");
        std::fs::rename(&copy, &data).expect("put the copy in place");
        self.pipeline = Some(open(&data, &self.workspace));
    }

    /// One JSONL delivery round, unless the sink is slow this step; a crash
    /// may come between the append and the cursor write.
    fn deliver(&mut self) {
        if self.rng.gen_range(0..4) == 0 {
            self.log.push("sink slow".into());
            return;
        }
        let crash_before_cursor = self.rng.gen_range(0..4) == 0;
        let pipeline = self.pipeline.as_mut().expect("running");
        let target = *pipeline.committed.borrow();
        if pipeline.cursor >= target {
            return;
        }
        let (cursor, name) = (pipeline.cursor, pipeline.route.name());
        // A sink error: the append fails after writing part of the round.
        let sink_error = (self.rng.gen_range(0..5) == 0).then(|| self.rng.gen_range(0..4096));
        pipeline.sink.fail_next = sink_error;
        let round = outbox::deliver_jsonl_round(
            &pipeline.store,
            &pipeline.route,
            &mut pipeline.sink,
            &Cursors::one(cursor),
            target,
            &pipeline.metrics,
        );
        // Still set: the round had nothing to append.
        let injected = sink_error.is_some() && pipeline.sink.fail_next.take().is_none();
        let new_cursor = match round {
            Ok((new_cursor, _)) if !injected => new_cursor.get(PARTITION_NONE),
            Ok(_) => self.fail("an injected sink error was not reported".into()),
            // The cursor stays: a later round delivers these records again.
            Err(_) if injected => {
                self.log.push(format!(
                    "sink error after {} bytes of {}..={target}",
                    sink_error.unwrap_or(0),
                    cursor + 1
                ));
                return;
            }
            Err(error) => self.fail(format!("JSONL delivery failed: {error}")),
        };
        self.log.push(format!("deliver {}..={new_cursor}", cursor + 1));
        if crash_before_cursor {
            self.crash("between the JSONL append and the cursor write");
            return;
        }
        let pipeline = self.pipeline.as_mut().expect("running");
        outbox::store_jsonl_cursor(
            &pipeline.store,
            &name,
            std::slice::from_ref(&name),
            &Cursors::one(new_cursor),
            &Cursors::one(cursor),
        );
        pipeline.cursor = new_cursor;
    }

    /// Every send record by sequence number: those still in the outbox and
    /// those delivered to the JSONL file (a record may be in both until its
    /// cursor moves). A sequence number twice in the file fails the run.
    fn sends(&self) -> BTreeMap<u64, serde_json::Value> {
        let pipeline = self.pipeline();
        let mut all = BTreeMap::new();
        for (seq, line) in pipeline.store.outbox_range(0, u64::MAX, usize::MAX).expect("outbox") {
            all.insert(
                seq,
                serde_json::from_str::<serde_json::Value>(&line).expect("outbox JSON"),
            );
        }
        let file = std::fs::read_to_string(self.root.path().join("data/sends.jsonl")).unwrap_or_default();
        let mut last = 0;
        for line in file.lines() {
            let record: serde_json::Value = match serde_json::from_str(line) {
                Ok(record) => record,
                Err(error) => self.fail(format!("the JSONL file has a line that is not JSON ({error}): {line}")),
            };
            let seq = record["seq"].as_u64().expect("seq");
            if seq <= last {
                self.fail(format!("the JSONL file has seq {seq} after {last}"));
            }
            last = seq;
            all.insert(seq, record);
        }
        all.retain(|_, record| record["kind"] == "send");
        all
    }

    fn tick(&mut self) {
        let jump = match self.rng.gen_range(0..20) {
            0 => self.rng.gen_range(86_400_000..5 * 86_400_000),
            1 => -self.rng.gen_range(60_000..3_600_000),
            _ => self.rng.gen_range(1_000..1_800_000),
        };
        self.now = (self.now + jump).max(START);
        self.latest = self.latest.max(self.now);
        self.log.push(format!("clock {jump:+} ms"));
    }

    fn check(&self) {
        let store = &self.pipeline().store;
        // Every send id once; `greet` sends per customer since its erasure.
        let mut ids: HashMap<String, (u64, serde_json::Value)> = HashMap::new();
        let mut greets: BTreeMap<String, u64> = BTreeMap::new();
        for (seq, record) in self.sends() {
            let id = record["id"].as_str().unwrap_or_default().to_string();
            let customer = record["customer"].as_str().unwrap_or_default().to_string();
            // A customer's sends from before its erasure count for the ids
            // (a customer that comes back must not repeat them) but not for
            // its greetings since.
            let before_erasure = (self.model.erased_through.get(&customer)).is_some_and(|through| seq <= *through);
            if let Some((first, earlier)) = ids.insert(id.clone(), (seq, record.clone())) {
                self.fail(format!(
                    "send id {id} twice: seq {first} {earlier} and seq {seq} {record}"
                ));
            }
            if record["journey"] == "greet" && !before_erasure {
                *greets.entry(customer).or_default() += 1;
            }
        }
        for index in 0..CUSTOMERS {
            let customer = format!("c{index}");
            let expected = self.model.logins.get(&customer).copied().unwrap_or(0);
            let state = store.customer(&customer).expect("read a customer");
            if customer == POISONED {
                if state.as_ref().is_some_and(|s| s.entries.contains_key("greet")) {
                    self.fail("the failing customer's input was applied".into());
                }
                // Its acknowledged inputs are held, none lost. (A re-sent
                // duplicate is held again; applying the held inputs drops it
                // by its messageId, as for any customer.)
                let fault = faults::read(&store.db, POISONED).expect("read the fault record");
                let held: HashSet<&str> = (fault.iter())
                    .flat_map(|f| f.held.iter())
                    .filter(|i| matches!(i, Input::Track { .. }))
                    .filter_map(Input::message_id)
                    .collect();
                if held.len() as u64 != self.model.held {
                    self.fail(format!(
                        "{POISONED}: {} inputs acknowledged, {} held",
                        self.model.held,
                        held.len()
                    ));
                }
                continue;
            }
            let applied = state
                .as_ref()
                .and_then(|s| s.entries.get("greet"))
                .map_or(0, |e| u64::from(e.count));
            if applied != expected {
                self.fail(format!("{customer}: {expected} logins acknowledged, {applied} applied"));
            }
            let sent = greets.get(&customer).copied().unwrap_or(0);
            if sent != expected {
                self.fail(format!(
                    "{customer}: {expected} logins acknowledged, {sent} greet sends in the outbox"
                ));
            }
        }
    }

    /// After a timer pass nobody but the failing customer has due work.
    fn check_timers(&self) {
        let store = &self.pipeline().store;
        for index in 0..CUSTOMERS {
            let customer = format!("c{index}");
            if customer == POISONED {
                continue;
            }
            if let Some(state) = store.customer(&customer).expect("read a customer") {
                if let Some(due) = state.next_wake().filter(|due| *due <= self.now) {
                    self.fail(format!("{customer}: work due at {due} did not fire by {}", self.now));
                }
            }
        }
    }

    fn run(mut self, steps: usize) {
        for step in 0..steps {
            self.step = step;
            match self.rng.gen_range(0..100) {
                0..=39 => self.ingest(),
                40..=64 => {
                    self.tick();
                    self.wake();
                    self.check_timers();
                }
                65..=74 => self.wake(),
                75..=79 => self.erase(),
                80..=84 => self.crash("after an acknowledged commit"),
                85..=94 => self.deliver(),
                _ => self.tick(),
            }
            self.check();
        }
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.stop(&self.tokio);
        }
    }
}

/// The seeds `cargo test` runs; `JOURNEYC_VOPR_SEED=S` replays one,
/// `JOURNEYC_VOPR_SEEDS=N` adds N random ones.
fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("JOURNEYC_VOPR_SEED") {
        return vec![seed.parse().expect("JOURNEYC_VOPR_SEED is a u64")];
    }
    let mut seeds: Vec<u64> = (1..=16).collect();
    if let Ok(count) = std::env::var("JOURNEYC_VOPR_SEEDS") {
        let count: usize = count.parse().expect("JOURNEYC_VOPR_SEEDS is a count");
        seeds.extend((0..count).map(|_| rand::random::<u64>()));
    }
    seeds
}

#[test]
fn the_pipeline_keeps_its_invariants_under_faults() {
    let steps = std::env::var("JOURNEYC_VOPR_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    for seed in seeds() {
        eprintln!("simulation seed {seed}");
        Simulation::new(seed).run(steps);
    }
}
