//! Writes handed over (PostgreSQL store, `docs/scale-out.md`): what a
//! standby is asked to do that is the owner's write and no intake (intake
//! goes through the inbox, `inbox.rs`), goes to the owner as a *command
//! record* and comes back as an *answer record*: `DELETE
//! /v1/customers/ID`, the install of a reload, a segment's broadcast
//! (`POST /v1/journeys/NAME/trigger` with `segment`), `POST
//! /v1/rejected/replay`, `POST /v1/outbox/retry` and `POST
//! /v1/customers/ID/retry` ([`Command`]). [`apply`] is the one place that
//! dispatches them, with the functions the owner's own endpoints call.
//!
//! A standby writes `q` + number (big-endian) → the [`Command`] as JSON,
//! outside the lease ([`Pg::apply_unfenced`]: named by its writer alone,
//! held in memory by no owner) with `NOTIFY journeyc_commands` in the same
//! transaction. The number is an id `n` from the store's sequence; for a
//! command naming one customer (the erasure, a customer's retry) it is
//! numbered for that customer's partition as its inbox records are
//! (`2^63 | n << 16 | partition`, `inbox.rs`), so the command and its
//! answer are stored in that partition and taken by its holder; a command
//! about the whole store (a reload's install, a broadcast, replaying
//! refusals, requeueing dead letters) keeps the plain id, at partition -1
//! with the store's holder, as every command written before commands were
//! kept per partition. The owner's [`run`] takes the records of the
//! partitions it holds in key order (a partition's command that waits, or
//! whose answer failed to be written, holds up that partition's later
//! commands only), does what the owner's own endpoint does with
//! the same code (the erasure of `http::erase`, the install of
//! [`super::reload::Reloader::install_stored`]), then writes, in one
//! fenced batch, the removal of the command and `Q` + id → the [`Answer`]
//! (status and body, as the owner's endpoint would answer). The standby
//! polls for the answer, removes it once read, and answers its client with
//! it: the same status and body as the owner gives. When no answer came
//! within [`ANSWER_WITHIN`], the standby answers 202 with the command's id:
//! the command is durable and the owner applies it (after a takeover, the
//! next owner); and at once when this node itself takes the lease over
//! (its takeover waits for the requests in flight, and it then applies the
//! command itself). Both commands are idempotent, so a crash of the owner
//! between the work and the batch that removes the command (which runs it
//! again) changes nothing: an erased customer is erased, a current version
//! current, a broadcast started once (its id is the command's id plus one,
//! and a record with it already there is the answer), dead letters queued,
//! a replayed call dropped (its `messageId` dedupes the second ingest), a
//! customer retried (the second retry finds it recovered or failing again,
//! as a second request would); the second answer may differ, e.g. a 404
//! for the erasure.
//!
//! A command waits for the inbox records written before it (smaller ids
//! of the same sequence) that it must follow ([`Waiting`]): a command
//! naming a customer for those of its partition (and of the old layout), a
//! command about the store for those of every partition held. A call acked
//! by a standby and then its customer's `DELETE` posted there are applied
//! in that order, as on the owner.
//!
//! An erasure's command names the customer; it is removed in the batch
//! that writes the answer, before the erasure's compaction rewrites the
//! table (`erasure.rs`). Its answer names no customer (what the erasure
//! found, [`http::Erased`]; the standby builds the owner's reply from it
//! with the id it asked for), so an answer left unread (the standby
//! answered 202, or died) holds none of the customer's bytes. An answer
//! carries the time the owner wrote it; no standby reads one after
//! [`ANSWER_WITHIN`], and the owner removes those older than
//! [`ANSWER_KEPT`] when its round starts and every [`SWEEP_EVERY`]
//! ([`sweep`]), so unread answers neither pile up nor keep what they say.

use super::http::{self, AppState};
use super::inbox;
use super::kv::pg::{Pg, CHANNEL_COMMANDS, PARTITION_NONE};
use super::kv::Batch;
use super::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;

/// The first byte of a command record's key.
pub const PREFIX_COMMAND: u8 = b'q';
/// The first byte of an answer record's key.
pub const PREFIX_ANSWER: u8 = b'Q';
/// How long a standby waits for the owner's answer before it answers 202.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// How long an answer no standby read is kept (many times
/// [`ANSWER_WITHIN`]: a node's clock may be off by some).
pub const ANSWER_KEPT: Duration = Duration::from_secs(600);
/// How often the owner removes the answers older than [`ANSWER_KEPT`].
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often a standby looks for the answer.
const ANSWER_POLL: Duration = Duration::from_millis(25);
/// How often the owner looks for commands when no notification came.
const POLL: Duration = Duration::from_secs(1);
/// Commands taken per look.
const TAKE: usize = 64;
/// How soon the owner looks again at a command that waits for the inbox
/// records written before it.
const INBOX_FIRST_POLL: Duration = Duration::from_millis(20);

/// What a standby hands to the owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// `DELETE /v1/customers/ID`, the id already resolved through aliases.
    Erase { customer: String },
    /// `POST /v1/reload`: install the stored bundle with this key.
    Reload { bundle: String },
    /// `POST /v1/journeys/NAME/trigger` naming a segment: the request as
    /// the standby validated it (its `journey` set from the path) and when
    /// it came; the owner validates it again against the version it runs.
    Broadcast {
        request: serde_json::Value,
        received_at: i64,
    },
    /// `POST /v1/rejected/replay`.
    ReplayRejected,
    /// `POST /v1/outbox/retry`: every dead letter, or those with these
    /// sequence numbers.
    RetryDead { seq: Option<Vec<u64>> },
    /// `POST /v1/customers/ID/retry`, the id already resolved through aliases.
    RetryCustomer { customer: String },
}

impl Command {
    /// The customer a command is about, whose partition's holder applies
    /// it; `None` for a command about the whole store (the store's holder).
    pub fn customer(&self) -> Option<&str> {
        match self {
            Command::Erase { customer } | Command::RetryCustomer { customer } => Some(customer),
            Command::Reload { .. }
            | Command::Broadcast { .. }
            | Command::ReplayRejected
            | Command::RetryDead { .. } => None,
        }
    }
}

/// An HTTP answer: status and JSON body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// An answer as its record holds it: with the time (ms) the owner wrote
/// it (0 in a record without one, which [`sweep`] takes as old).
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    answer: Answer,
    #[serde(default)]
    written_at: i64,
}

impl Answer {
    pub fn ok(body: serde_json::Value) -> Answer {
        Answer { status: 200, body }
    }

    /// An error answer, in the one shape of error bodies (`reply.rs`).
    pub fn error(status: axum::http::StatusCode, field: &str, reason: &str) -> Answer {
        Answer {
            status: status.as_u16(),
            body: super::reply::error_json(status, field, reason),
        }
    }

    /// A 500 with the store's reason.
    pub fn failed(reason: String) -> Answer {
        Answer::error(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "", &reason)
    }

    /// As an axum response.
    pub fn into_response(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let status =
            axum::http::StatusCode::from_u16(self.status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body)).into_response()
    }
}

/// The answer to a reload, on the owner (`POST /v1/reload`) and for a
/// standby's: the report, or 422 with the diagnostics.
pub fn reload_answer(result: Result<serde_json::Value, String>) -> Answer {
    match result {
        Ok(report) => Answer::ok(report),
        Err(diagnostics) => {
            let mut answer = Answer::error(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "workspace",
                "the workspace has errors; the running version is kept",
            );
            answer.body["diagnostics"] = serde_json::Value::String(diagnostics);
            answer
        }
    }
}

fn key(prefix: u8, id: u64) -> Vec<u8> {
    let mut key = vec![prefix];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// On a standby: hands `command` to the owner and waits for its answer
/// (at most [`ANSWER_WITHIN`], then 202); a store failure is a 500.
pub async fn submit(pg: &Pg, store: &Store, command: &Command) -> Answer {
    match submit_within(pg, store, command, ANSWER_WITHIN).await {
        Ok(answer) => answer,
        Err(error) => Answer::failed(error.to_string()),
    }
}

async fn submit_within(pg: &Pg, store: &Store, command: &Command, within: Duration) -> Result<Answer, StoreError> {
    let id = store.db.generate_id()?;
    let number = match command.customer() {
        Some(customer) => inbox::partitioned_number(id, pg.partition_of(&super::store::customer_key(customer)))?,
        None => id,
    };
    let mut batch = Batch::default();
    batch.insert(
        key(PREFIX_COMMAND, number),
        serde_json::to_vec(command).expect("a command serializes"),
    );
    pg.apply_unfenced(batch, Some(CHANNEL_COMMANDS))?;
    let answer_key = key(PREFIX_ANSWER, number);
    let started = std::time::Instant::now();
    // This node taking the lease over ends the wait: its takeover waits for
    // the requests in flight (`server.rs`), and it applies the command
    // itself once it owns the store. With --spread a command naming a
    // customer is applied by its partition's holder: the wait ends when
    // that is this node (the store's owner hands such a command over too,
    // `http.rs`), not at the store's lease.
    let applies_here = || match command.customer() {
        Some(customer) if pg.spread() => pg
            .owned()
            .contains_key(&pg.partition_of(&super::store::customer_key(customer))),
        _ => !matches!(pg.lease(), super::kv::pg::LeaseState::Standby),
    };
    // A node that applies it from the start (a --spread standby holding
    // the partition) waits for its own answer.
    let applied_here_from_start = applies_here();
    let mut lease = pg.lease_changes();
    let mut taking_over = false;
    loop {
        if let Some(value) = store.db.get(&answer_key)? {
            let mut batch = Batch::default();
            batch.remove(answer_key);
            pg.apply_unfenced(batch, None)?;
            return Ok(serde_json::from_slice::<Stored>(&value).map_or_else(
                |e| Answer::failed(format!("the owner's answer to command {id} cannot be read: {e}")),
                |stored| stored.answer,
            ));
        }
        if taking_over || started.elapsed() >= within {
            let reason = match taking_over {
                true if command.customer().is_some() && pg.spread() => {
                    "kept for the node that holds its customer's partition: this one has taken it over and applies it"
                        .to_string()
                }
                true => "kept for the node that holds the store's lease: this one is taking it over and applies it".to_string(),
                false => format!(
                    "handed to the node that holds the store's lease, which has not applied it within {} s; it is kept and will be",
                    within.as_secs()
                ),
            };
            return Ok(Answer {
                status: 202,
                body: serde_json::json!({"success": true, "pending": true, "command": id, "reason": reason}),
            });
        }
        tokio::select! {
            () = tokio::time::sleep(ANSWER_POLL) => {}
            _ = lease.changed() => {}
        }
        taking_over = !applied_here_from_start && applies_here();
    }
}

/// The owner's side: applies the commands standbys wrote, until `stopping`
/// (a round of the owner on PostgreSQL). Woken by `LISTEN
/// journeyc_commands`, and looks every second anyway.
pub async fn run(state: AppState, mut stopping: watch::Receiver<bool>) {
    let wakeups = match &state.store.db {
        super::kv::Kv::Postgres(pg) => pg.wakeups(CHANNEL_COMMANDS),
        super::kv::Kv::Sled(_) => return,
    };
    let mut swept: Option<std::time::Instant> = None;
    loop {
        if swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            sweep(&state.store, super::timers::now_ms());
            swept = Some(std::time::Instant::now());
        }
        let records: Vec<_> = (state.store.db)
            .range_of_held([PREFIX_COMMAND]..[PREFIX_COMMAND + 1])
            .take(TAKE)
            .collect();
        let (mut answered, mut deferred) = (0, false);
        // Partitions (-1: the store's commands) whose next command waits:
        // their later commands wait too, the others' do not.
        let mut held_up: HashSet<i32> = HashSet::new();
        let mut waiting: Option<Waiting> = None;
        let last = (records.iter().flatten())
            .filter_map(|(key, _)| inbox::key_number(key))
            .map(|number| inbox::number_parts(number).1)
            .max()
            .unwrap_or(0);
        for record in &records {
            let (record_key, value) = match record {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(%error, "reading the commands failed");
                    break;
                }
            };
            let number = inbox::key_number(record_key).unwrap_or(0);
            let (partition, id) = inbox::number_parts(number);
            if held_up.contains(&partition) {
                continue;
            }
            // Read once the commands are: an inbox record acked before a
            // command was read is among them.
            let waiting = waiting.get_or_insert_with(|| Waiting::read(&state.store, last));
            if waiting.before(partition, id) {
                // Calls acked before the command are applied first (a
                // `track` then a `DELETE` posted to a standby erases what
                // the track did): looked at again shortly.
                deferred = true;
                held_up.insert(partition);
                continue;
            }
            let answer = match serde_json::from_slice::<Command>(value) {
                Ok(command) => apply(&state, id, command).await,
                Err(error) => Answer::error(
                    axum::http::StatusCode::BAD_REQUEST,
                    "",
                    &format!("a command this node cannot read: {error}"),
                ),
            };
            if answer.status >= 500 && *stopping.borrow() {
                // Stopping (the commit thread gone): left for the next owner.
                return;
            }
            let mut batch = Batch::default();
            batch.remove(record_key.to_vec());
            let stored = Stored {
                answer,
                written_at: super::timers::now_ms(),
            };
            // At the command's number: in its partition, where its standby looks.
            let mut answer_key = record_key.to_vec();
            answer_key[0] = PREFIX_ANSWER;
            batch.insert(answer_key, serde_json::to_vec(&stored).expect("an answer serializes"));
            if let Err(error) = state.store.db.apply_batch(batch) {
                // Kept: applied again at the next look (all are idempotent).
                tracing::warn!(%error, partition, "answering a command failed");
                held_up.insert(partition);
                continue;
            }
            answered += 1;
        }
        if *stopping.borrow() {
            return;
        }
        if answered == TAKE {
            // More may be waiting: look again at once.
            continue;
        }
        let pause = if deferred { INBOX_FIRST_POLL } else { POLL };
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            () = wakeups.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Removes the answers written more than [`ANSWER_KEPT`] before `now`
/// (unread: their standby answered 202, or died); a failure is left for
/// the next sweep.
fn sweep(store: &Store, now: i64) {
    let oldest = now.saturating_sub(ANSWER_KEPT.as_millis() as i64);
    let mut batch = Batch::default();
    for record in store.db.range_of_held([PREFIX_ANSWER]..[PREFIX_ANSWER + 1]) {
        let Ok((key, value)) = record else { break };
        let written_at = serde_json::from_slice::<Stored>(&value).map_or(0, |stored| stored.written_at);
        if written_at < oldest {
            batch.remove(key.to_vec());
        }
    }
    if batch.is_empty() {
        return;
    }
    match store.db.apply_batch(batch) {
        Ok(()) => tracing::info!("unread answers of handed-over commands removed"),
        Err(error) => tracing::warn!(%error, "removing old answers failed"),
    }
}

/// The inbox records waiting in the partitions this node holds, as the
/// oldest id per partition (-1: the records of the old layout, which may
/// name any customer).
struct Waiting {
    oldest: HashMap<i32, u64>,
}

impl Waiting {
    /// Reads the held partitions' inbox keys of ids below `below` (and
    /// every record of the old layout); a failure reads as none waiting
    /// (the command's own write fails alike then).
    fn read(store: &Store, below: u64) -> Waiting {
        let mut oldest: HashMap<i32, u64> = HashMap::new();
        let end = inbox::partitioned_number(below, 0).map_or(inbox::key(u64::MAX), inbox::key);
        let records = store.db.range_of_held(inbox::key(0)..end);
        for key in records.keys() {
            let Ok(key) = key else { break };
            let Some(number) = inbox::key_number(&key) else {
                continue;
            };
            let (partition, id) = inbox::number_parts(number);
            let first = oldest.entry(partition).or_insert(id);
            *first = (*first).min(id);
        }
        Waiting { oldest }
    }

    /// Whether an inbox record written before the command `id` (a smaller
    /// id of the same sequence) that it must follow still waits: of its
    /// partition or of the old layout for a command naming a customer,
    /// of any held partition for a command about the whole store
    /// (`partition` -1).
    fn before(&self, partition: i32, id: u64) -> bool {
        let older = |p: &i32| self.oldest.get(p).is_some_and(|oldest| *oldest < id);
        match partition {
            PARTITION_NONE => self.oldest.values().any(|oldest| *oldest < id),
            partition => older(&partition) || older(&PARTITION_NONE),
        }
    }
}

/// Does what the owner's own endpoint does for `command` (number `id`),
/// with the same functions, and answers as it would: the one dispatch of
/// commands (a command that names a customer is taken by the holder of
/// its partition: [`run`] reads the held partitions' commands only).
async fn apply(state: &AppState, id: u64, command: Command) -> Answer {
    match command {
        // What the erasure found, not naming the customer: an answer no
        // standby reads (it answered 202) must hold no byte of it.
        Command::Erase { customer } => match http::erase(state, customer).await {
            Ok(erased) => Answer::ok(serde_json::to_value(erased).expect("an outcome serializes")),
            Err(failure) => failure,
        },
        Command::Reload { bundle } => {
            tracing::info!(%bundle, "a standby's reload");
            reload_answer(state.reloader.install_stored(&bundle).await)
        }
        Command::Broadcast { request, received_at } => {
            super::broadcast::started_for_standby(state, &request, received_at, id + 1).await
        }
        Command::ReplayRejected => http::replay(state).await,
        Command::RetryDead { seq } => http::requeue_dead(state, seq).await,
        // As the erasure: what the retry found, not naming the customer.
        Command::RetryCustomer { customer } => match http::retry(state, customer).await {
            Ok(retried) => Answer::ok(serde_json::to_value(retried).expect("an outcome serializes")),
            Err(failure) => failure,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records a standby writes: each command as JSON, read back the
    /// same (a command an older node wrote still reads).
    #[test]
    fn commands_round_trip_as_json() {
        let commands = [
            Command::Erase { customer: "c1".into() },
            Command::Reload { bundle: "k".into() },
            Command::Broadcast {
                request: serde_json::json!({"segment": "s", "journey": "j"}),
                received_at: 5,
            },
            Command::ReplayRejected,
            Command::RetryDead { seq: Some(vec![3, 4]) },
            Command::RetryDead { seq: None },
            Command::RetryCustomer { customer: "c2".into() },
        ];
        for command in commands {
            let bytes = serde_json::to_vec(&command).expect("serializes");
            assert_eq!(serde_json::from_slice::<Command>(&bytes).expect("reads"), command);
        }
        assert_eq!(
            serde_json::from_str::<Command>(r#"{"erase":{"customer":"c"}}"#).expect("reads"),
            Command::Erase { customer: "c".into() }
        );
        assert_eq!(
            serde_json::to_string(&Command::ReplayRejected).expect("serializes"),
            r#""replay_rejected""#
        );
    }

    /// The sweep removes the answers older than [`ANSWER_KEPT`] (and those
    /// with no time) and keeps the recent ones; a stored answer reads as
    /// the answer it holds.
    #[test]
    fn old_answers_are_swept_and_recent_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &super::super::store::StoreOptions::default()).expect("open");
        let now = 10 * ANSWER_KEPT.as_millis() as i64;
        let stored = |written_at: i64| {
            serde_json::to_vec(&Stored {
                answer: Answer::ok(serde_json::json!({"n": written_at})),
                written_at,
            })
            .expect("serializes")
        };
        let kept = ANSWER_KEPT.as_millis() as i64;
        store
            .db
            .insert(key(PREFIX_ANSWER, 1), stored(now - kept - 1))
            .expect("insert");
        store
            .db
            .insert(key(PREFIX_ANSWER, 2), stored(now - kept + 1))
            .expect("insert");
        store
            .db
            .insert(key(PREFIX_ANSWER, 3), &br#"{"status":200,"body":{}}"#[..])
            .expect("insert");
        store
            .db
            .insert(key(PREFIX_COMMAND, 4), &br#""replay_rejected""#[..])
            .expect("insert");
        sweep(&store, now);
        let left: Vec<Vec<u8>> = (store.db.iter().keys())
            .map(|k| k.expect("key").to_vec())
            .filter(|k| [PREFIX_ANSWER, PREFIX_COMMAND].contains(&k[0]))
            .collect();
        assert_eq!(left, vec![key(PREFIX_ANSWER, 2), key(PREFIX_COMMAND, 4)]);
        let read: Stored =
            serde_json::from_slice(&store.db.get(key(PREFIX_ANSWER, 2)).expect("get").expect("there")).expect("reads");
        assert_eq!(read.answer, Answer::ok(serde_json::json!({"n": now - kept + 1})));
    }
}
