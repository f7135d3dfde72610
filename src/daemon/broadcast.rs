//! Durable, resumable segment broadcasts (`docs/daemon.md`, "Broadcasts"):
//! `POST /v1/journeys/NAME/trigger` with `{"segment": …}` writes a
//! broadcast record; [`run`] hands the commit thread one bounded step at a
//! time; each step visits the next customers in key order, gives the
//! members the trigger input ([`crate::runtime::broadcast`], the
//! simulator's rules) and advances the record.
//!
//! **Invariant:** a record `B/ID` is written once by the HTTP handler
//! (flushed before the 202) and from then on only by the commit thread, in
//! the same batch as the enrollments of the customers that step visited. Its
//! cursor is an exclusive bound: the id of the last customer visited, every
//! customer after it in key order still to visit. When the customer it
//! names is erased, the cursor moves back to the greatest id before it
//! that is still stored (none: the start), which no customer after the old
//! cursor can be, so the record never keeps an erased id and a visited
//! customer is never visited again. After a crash the last committed step's
//! record is the one on disk: no member is given the broadcast twice, none
//! is passed over, and the message id per (broadcast, customer) drops a
//! second delivery anyway.

use super::command::Answer;
use super::commit::{CommitError, Committer};
use super::http::{time_json, value_json, AppState, PathParam};
use super::reply::error;
use super::store::{self, Store, StoreError};
use crate::compile::bytecode::{Bundle, Value};
use crate::runtime::broadcast::{self as rules, Broadcast};
use crate::runtime::input::Call;
use crate::runtime::Millis;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

pub const PREFIX_BROADCAST: u8 = b'B';
/// Customers one step visits unless `--broadcast-batch` says otherwise.
pub const BATCH_CUSTOMERS_DEFAULT: usize = 256;
/// The most customers one step may visit: a step is one commit, and intake
/// waits behind it.
pub const BATCH_CUSTOMERS_MAX: usize = 10_000;
/// Finished broadcasts kept; beyond, starting one removes the oldest.
pub const BROADCASTS_KEPT_MAX: usize = 1_000;
/// Broadcasts running at once at most; more are refused (409).
pub const BROADCASTS_RUNNING_MAX: usize = 64;
/// How often the driver looks for broadcasts when none is running and it
/// was not woken (a fallback: starting one wakes it).
const IDLE_POLL: Duration = Duration::from_secs(10);
/// The pause after a step that failed to commit.
const FAILED_STEP_PAUSE: Duration = Duration::from_secs(1);

/// `--broadcast-batch`, within 1 ..= [`BATCH_CUSTOMERS_MAX`].
pub fn batch_customers(given: Option<usize>) -> usize {
    given.unwrap_or(BATCH_CUSTOMERS_DEFAULT).clamp(1, BATCH_CUSTOMERS_MAX)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Progress {
    Running,
    Done,
}

/// A broadcast as stored: the request, the cursor and the counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub journey: String,
    pub segment: String,
    pub properties: BTreeMap<String, Value>,
    /// The workspace version (bundle key) current when it was started.
    pub workspace: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
    pub state: Progress,
    /// The last customer visited (exclusive bound); `None`: from the start.
    pub cursor: Option<String>,
    /// Customers reached, those of them in the segment, and those members
    /// who entered the journey (the others were kept out by its entry rules).
    pub visited: u64,
    pub members: u64,
    pub enrolled: u64,
}

impl Record {
    /// As `GET /v1/broadcasts/ID` shows it (no cursor: it names a customer).
    pub fn to_json(&self) -> serde_json::Value {
        let properties: serde_json::Map<String, serde_json::Value> = (self.properties.iter())
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect();
        json!({
            "broadcast": self.id.to_string(),
            "journey": self.journey,
            "segment": self.segment,
            "properties": properties,
            "workspace": self.workspace,
            "state": self.state,
            "created_at": time_json(self.created_at),
            "updated_at": time_json(self.updated_at),
            "finished_at": self.finished_at.map(time_json),
            "visited": self.visited,
            "members": self.members,
            "enrolled": self.enrolled,
            "skipped": self.members - self.enrolled,
        })
    }
}

pub fn key(id: u64) -> Vec<u8> {
    [&[PREFIX_BROADCAST][..], &id.to_be_bytes()].concat()
}

fn encode(record: &Record) -> Vec<u8> {
    serde_json::to_vec(record).expect("a broadcast record serializes")
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

pub fn read(store: &Store, id: u64) -> Result<Option<Record>, StoreError> {
    let key = key(id);
    match store.db.get(&key)? {
        Some(bytes) => Ok(Some(decode(&key, &bytes)?)),
        None => Ok(None),
    }
}

/// Every broadcast kept, oldest first.
pub fn list(store: &Store) -> Result<Vec<Record>, StoreError> {
    let mut records = Vec::new();
    for item in store.db.scan_prefix([PREFIX_BROADCAST]) {
        let (key, value) = item?;
        records.push(decode(&key, &value)?);
    }
    Ok(records)
}

/// Why a broadcast was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{BROADCASTS_RUNNING_MAX} broadcasts are running; wait for one to finish")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes a new broadcast's record (and drops the oldest finished ones
/// beyond [`BROADCASTS_KEPT_MAX`]) in one batch, flushed before returning.
/// `id`: the broadcast's id when it is given (a standby's request handed
/// over, `command.rs`: its command's id plus one); a record with that id
/// already there is answered as it is, so the command applied again after a
/// crash starts nothing twice. `None`: a fresh id.
pub async fn start(
    store: &Store,
    broadcast: Broadcast,
    workspace: String,
    now: Millis,
    id: Option<u64>,
) -> Result<Record, StartError> {
    if let Some(id) = id {
        if let Some(record) = read(store, id)? {
            return Ok(record);
        }
    }
    let existing = list(store)?;
    if existing.iter().filter(|r| r.state == Progress::Running).count() >= BROADCASTS_RUNNING_MAX {
        return Err(StartError::TooMany);
    }
    let mut batch = crate::daemon::kv::Batch::default();
    let done: Vec<&Record> = existing.iter().filter(|r| r.state == Progress::Done).collect();
    for old in done.iter().take((done.len() + 1).saturating_sub(BROADCASTS_KEPT_MAX)) {
        batch.remove(key(old.id));
    }
    let record = Record {
        id: match id {
            Some(id) => id,
            None => store.db.generate_id()? + 1,
        },
        journey: broadcast.journey,
        segment: broadcast.segment,
        properties: broadcast.properties,
        workspace,
        created_at: now,
        updated_at: now,
        finished_at: None,
        state: Progress::Running,
        cursor: None,
        visited: 0,
        members: 0,
        enrolled: 0,
    };
    batch.insert(key(record.id), encode(&record));
    store.db.apply_batch(batch)?;
    store.db.flush_async().await?;
    Ok(record)
}

/// `POST /v1/journeys/NAME/trigger` with a segment: starts the broadcast
/// and answers 202 with its id (progress at `GET /v1/broadcasts/ID`).
/// `id` as for [`start`].
pub async fn started(state: &AppState, broadcast: Broadcast, workspace: &str, now: Millis, id: Option<u64>) -> Answer {
    match start(&state.store, broadcast, workspace.to_string(), now, id).await {
        Ok(record) => {
            state.broadcast_started.notify_one();
            tracing::info!(broadcast = record.id, journey = %record.journey, segment = %record.segment, "broadcast started");
            let mut answer = record.to_json();
            answer["success"] = json!(true);
            Answer {
                status: StatusCode::ACCEPTED.as_u16(),
                body: answer,
            }
        }
        Err(StartError::TooMany) => Answer::error(StatusCode::CONFLICT, "segment", &StartError::TooMany.to_string()),
        Err(StartError::Store(e)) => Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "store", &e.to_string()),
    }
}

/// A standby's broadcast handed over (`command.rs`): the request
/// validated again against the owner's version, then started as the
/// owner starts one, with the id the command gives.
pub async fn started_for_standby(
    state: &AppState,
    request: &serde_json::Value,
    received_at: Millis,
    id: u64,
) -> Answer {
    let runtime = super::commit::current(&state.runtime);
    match rules::parse(request, &runtime.bundle, Some(received_at)) {
        Ok(broadcast) => started(state, broadcast, &runtime.bundle_key, received_at, Some(id)).await,
        Err(e) => Answer::error(StatusCode::UNPROCESSABLE_ENTITY, &e.field, &e.reason),
    }
}

/// One step of a broadcast, decided by the commit thread: the record as
/// it will be written and the members' trigger calls.
pub struct Step {
    pub record: Record,
    pub calls: Vec<Call>,
    /// With `--spread`: the members of partitions this node does not hold,
    /// handed to their holders as inbox records in the step's batch
    /// ([`Step::hand_over`]); `calls` keeps the others.
    pub handed: Vec<Call>,
}

impl Step {
    /// Moves the calls of customers whose partitions this node does not
    /// hold (PostgreSQL with `--spread`) from `calls` to `handed`.
    pub fn hand_over(&mut self, store: &Store) {
        let crate::daemon::kv::Kv::Postgres(pg) = &store.db else {
            return;
        };
        if !pg.spread() {
            return;
        }
        let owned = pg.owned();
        let (kept, handed) = std::mem::take(&mut self.calls)
            .into_iter()
            .partition(|call| owned.contains_key(&pg.partition_of(&store::customer_key(&call.customer))));
        self.calls = kept;
        self.handed = handed;
    }
}

/// The next step of broadcast `id` at `now`: up to `batch` customers after
/// the cursor, in key order, each a member or not as its stored state is
/// now. `None` when the broadcast is gone or done. A step that reaches the
/// last customer finishes the broadcast.
pub fn next_step(
    store: &Store,
    bundle: &Bundle,
    id: u64,
    batch: usize,
    now: Millis,
) -> Result<Option<Step>, StoreError> {
    let Some(mut record) = read(store, id)? else {
        return Ok(None);
    };
    if record.state == Progress::Done {
        return Ok(None);
    }
    let start = match &record.cursor {
        Some(cursor) => Bound::Excluded(store::customer_key(cursor)),
        None => Bound::Included(vec![store::PREFIX_CUSTOMER]),
    };
    // A segment the current workspace no longer has has no members.
    let segment = rules::segment_id(bundle, &record.segment);
    let broadcast = record.id.to_string();
    let mut calls = Vec::new();
    let mut seen = 0;
    for item in store.db.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
        let (key, value) = item?;
        if key.first() != Some(&store::PREFIX_CUSTOMER) || seen == batch {
            break;
        }
        seen += 1;
        let (state, _) = store.decode_customer(&key, &value)?;
        record.visited += 1;
        let member = rules::is_known(&state) && segment.is_some_and(|s| rules::is_member(bundle, &state, s, now));
        if member {
            record.members += 1;
            calls.push(Call {
                customer: state.id.clone(),
                input: rules::input(&broadcast, &record.journey, &record.properties, now),
                merge: None,
                fill: BTreeMap::new(),
                group: None,
            });
        }
        record.cursor = Some(state.id);
    }
    record.updated_at = now;
    if seen < batch {
        record.state = Progress::Done;
        record.finished_at = Some(now);
        record.cursor = None;
    }
    Ok(Some(Step {
        record,
        calls,
        handed: Vec::new(),
    }))
}

/// The step's record with the members who entered the journey counted
/// from the group's trace lines (a broadcast step is committed alone, and
/// only a trigger enters a `trigger api` journey).
pub fn finish_step<'a>(step: &Step, lines: impl Iterator<Item = &'a str>) -> (Vec<u8>, Vec<u8>) {
    let mut record = step.record.clone();
    let customers: HashSet<&str> = step.calls.iter().map(|call| call.customer.as_str()).collect();
    for line in lines {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let value = value.get("record").unwrap_or(&value);
        let entered = value["kind"] == "enter" && value["journey"] == record.journey.as_str();
        if entered && value["customer"].as_str().is_some_and(|c| customers.contains(c)) {
            record.enrolled += 1;
        }
    }
    (key(record.id), encode(&record))
}

/// Moves the cursor of every running broadcast that names an erased
/// customer (or an id merged into one) back to the greatest customer id
/// before it that stays stored, in the erasing batch.
pub fn forget(store: &Store, batch: &mut crate::daemon::kv::Batch, erased: &[String]) -> Result<(), StoreError> {
    if erased.is_empty() {
        return Ok(());
    }
    let mut ids: HashSet<String> = erased.iter().cloned().collect();
    for customer in erased {
        ids.extend(store.aliases_of(customer)?);
    }
    for mut record in list(store)? {
        let Some(cursor) = record.cursor.clone() else {
            continue;
        };
        if record.state != Progress::Running || !ids.contains(&cursor) {
            continue;
        }
        let mut before = None;
        let range = store
            .db
            .range(vec![store::PREFIX_CUSTOMER]..store::customer_key(&cursor));
        for item in range.rev() {
            let (key, _) = item?;
            let id = String::from_utf8_lossy(&key[1..]).into_owned();
            if !ids.contains(&id) {
                before = Some(id);
                break;
            }
        }
        record.cursor = before;
        batch.insert(key(record.id), encode(&record));
    }
    Ok(())
}

/// The driver: while broadcasts are running, hands the commit thread one
/// step of each in turn; a step is one job in the commit queue, behind
/// whatever intake and timers queued meanwhile, so they are never starved.
pub async fn run(
    store: Store,
    committer: Committer,
    batch: usize,
    started: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let running: Vec<u64> = match list(&store) {
            Ok(records) => (records.into_iter())
                .filter(|r| r.state == Progress::Running)
                .map(|r| r.id)
                .collect(),
            Err(error) => {
                tracing::error!(%error, "cannot read the broadcasts");
                Vec::new()
            }
        };
        if running.is_empty() {
            tokio::select! {
                _ = started.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        for id in running {
            if *stop.borrow() {
                return;
            }
            match committer.broadcast(id, batch).await {
                Ok(false) => tracing::info!(broadcast = id, "broadcast done"),
                Ok(true) => {}
                Err(CommitError::ShuttingDown) => return,
                Err(error) => {
                    tracing::warn!(broadcast = id, %error, "a broadcast step failed; it is tried again");
                    tokio::time::sleep(FAILED_STEP_PAUSE).await;
                }
            }
        }
    }
}

/// `GET /v1/broadcasts`: every broadcast kept, newest first.
pub async fn list_broadcasts(State(state): State<AppState>) -> Response {
    list_response(&state.store)
}

/// `GET /v1/broadcasts` on the owner or a standby.
pub fn list_response(store: &Store) -> Response {
    match list(store) {
        Ok(records) => {
            let broadcasts: Vec<serde_json::Value> = records.iter().rev().map(Record::to_json).collect();
            Json(json!({ "broadcasts": broadcasts })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

/// `GET /v1/broadcasts/ID`: one broadcast's progress.
pub async fn get_broadcast(State(state): State<AppState>, PathParam(id): PathParam) -> Response {
    get_response(&state.store, &id)
}

/// `GET /v1/broadcasts/ID` on the owner or a standby.
pub fn get_response(store: &Store, id: &str) -> Response {
    let Ok(number) = id.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, "broadcast", format!("no broadcast {id:?}"));
    };
    match read(store, number) {
        Ok(Some(record)) => Json(record.to_json()).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "broadcast", format!("no broadcast {id:?}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

/// Renders the broadcast metrics for `/metrics`: broadcasts by state, and
/// the totals of the records kept.
pub fn metrics_text(store: &Store) -> String {
    let records = list(store).unwrap_or_default();
    let running = records.iter().filter(|r| r.state == Progress::Running).count();
    let done = records.len() - running;
    let sum = |f: fn(&Record) -> u64| records.iter().map(f).sum::<u64>();
    format!(
        "# HELP journeyc_broadcasts Segment broadcasts kept, by state.\n# TYPE journeyc_broadcasts gauge\n\
         journeyc_broadcasts{{state=\"running\"}} {running}\njourneyc_broadcasts{{state=\"done\"}} {done}\n\
         # HELP journeyc_broadcast_customers Customers of the kept broadcasts: visited, members, enrolled.\n\
         # TYPE journeyc_broadcast_customers gauge\n\
         journeyc_broadcast_customers{{count=\"visited\"}} {}\n\
         journeyc_broadcast_customers{{count=\"members\"}} {}\n\
         journeyc_broadcast_customers{{count=\"enrolled\"}} {}\n",
        sum(|r| r.visited),
        sum(|r| r.members),
        sum(|r| r.enrolled),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::CustomerState;
    use store::StoreOptions;

    fn bundle() -> Bundle {
        let source = "customer { plan: string? }\nsegment pro = customer.plan == \"pro\"\n\
                      message hi push { body \"hi\" }\njourney j {\n  trigger api {}\n  send hi\n}\n";
        let mut sources = crate::source::SourceMap::new();
        sources.add("w.journey", source);
        let outcome = crate::check::check_workspace(&sources, &crate::workspace::MemoryFiles::default());
        crate::compile::compile(&outcome.checked.expect("the workspace checks"))
    }

    fn put(store: &Store, id: &str, plan: &str) {
        let mut state = CustomerState::new(id);
        state.first_seen = Some(1);
        state.profile.insert("plan".into(), Value::String(plan.into()));
        store.put_customer(&state, None).expect("insert");
    }

    fn record(cursor: Option<&str>) -> Record {
        Record {
            id: 1,
            journey: "j".into(),
            segment: "pro".into(),
            properties: BTreeMap::new(),
            workspace: "w".into(),
            created_at: 0,
            updated_at: 0,
            finished_at: None,
            state: Progress::Running,
            cursor: cursor.map(str::to_string),
            visited: 0,
            members: 0,
            enrolled: 0,
        }
    }

    #[test]
    fn steps_walk_customers_in_key_order_and_finish_at_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
        for (id, plan) in [("c", "pro"), ("a", "pro"), ("b", "free"), ("d", "pro")] {
            put(&store, id, plan);
        }
        store.db.insert(key(1), encode(&record(None))).expect("insert");
        let bundle = bundle();
        let first = next_step(&store, &bundle, 1, 2, 10).expect("reads").expect("running");
        let members: Vec<&str> = first.calls.iter().map(|c| c.customer.as_str()).collect();
        assert_eq!(members, ["a"]);
        assert_eq!((first.record.visited, first.record.members), (2, 1));
        assert_eq!(first.record.cursor.as_deref(), Some("b"));
        assert_eq!(first.calls[0].input.message_id(), Some("broadcast:1"));
        store.db.insert(key(1), encode(&first.record)).expect("insert");
        let second = next_step(&store, &bundle, 1, 2, 10).expect("reads").expect("running");
        let members: Vec<&str> = second.calls.iter().map(|c| c.customer.as_str()).collect();
        assert_eq!(members, ["c", "d"]);
        assert_eq!(
            second.record.state,
            Progress::Running,
            "a full step may not be the last"
        );
        store.db.insert(key(1), encode(&second.record)).expect("insert");
        let last = next_step(&store, &bundle, 1, 2, 10).expect("reads").expect("running");
        assert!(last.calls.is_empty());
        assert_eq!((last.record.visited, last.record.members), (4, 3));
        assert_eq!((last.record.state, last.record.cursor.clone()), (Progress::Done, None));
        store.db.insert(key(1), encode(&last.record)).expect("insert");
        assert!(next_step(&store, &bundle, 1, 2, 10).expect("reads").is_none());
    }

    #[test]
    fn an_erased_cursor_moves_back_to_a_customer_still_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
        for id in ["a", "b", "c"] {
            put(&store, id, "pro");
        }
        store.db.insert(key(1), encode(&record(Some("c")))).expect("insert");
        let mut batch = crate::daemon::kv::Batch::default();
        forget(&store, &mut batch, &["c".to_string(), "b".to_string()]).expect("forget");
        store.db.apply_batch(batch).expect("apply");
        assert_eq!(
            read(&store, 1).expect("reads").expect("kept").cursor.as_deref(),
            Some("a")
        );
        let mut batch = crate::daemon::kv::Batch::default();
        forget(&store, &mut batch, &["a".to_string()]).expect("forget");
        store.db.apply_batch(batch).expect("apply");
        assert_eq!(read(&store, 1).expect("reads").expect("kept").cursor, None);
        let mut batch = crate::daemon::kv::Batch::default();
        forget(&store, &mut batch, &["b".to_string()]).expect("forget");
        store.db.apply_batch(batch).expect("apply");
        assert_eq!(
            read(&store, 1).expect("reads").expect("kept").cursor,
            None,
            "other cursors stay"
        );
    }
}
