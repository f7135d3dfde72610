//! Group commit: the one thread that changes customer state.
//!
//! Requests arrive as [`Job`]s on a bounded channel. The commit thread takes
//! every job waiting (up to a limit), applies them through the interpreter,
//! writes the new customer states, timer index changes, outbox entries and
//! stats counters as ONE [`sled::Batch`], flushes once, and only then answers
//! every job. So a 200 always means "durably stored", and many concurrent
//! requests share one fsync.
//!
//! Customers are independent, so a group's inputs are sorted into one
//! [`Lane`] per customer, and a large group runs its lanes on two threads
//! (the second core would otherwise wait); the lanes only read the store.
//! What they will read by key (each customer's record, fault record and
//! stats groups, the aliases of the ids named) is fetched before they run,
//! in two [`Kv::get_many`](super::kv::Kv::get_many) (by the ids the jobs
//! name, then by the lanes' customers and their enrollments), into a
//! [`store::Prefetched`]: two queries per group instead of a round trip
//! per read. That is done on PostgreSQL; on sled the lanes read the store
//! themselves, on their two threads. The lanes keep the group's own
//! changes themselves, so the fetched values are the store's as the group
//! began, as reads of the store itself were.
//!
//! **Invariant:** the inputs of one customer are applied in the order they
//! were accepted (channel order, then order within a job), and the group's
//! trace records are numbered in the order of the inputs that made them, as
//! if every input were applied one after another. Nothing of a job is written
//! unless all of it is.
//!
//! A group refused because it touched a partition this node does not own
//! (PostgreSQL, [`CommitError::PartitionNotOwned`]) is committed again job
//! by job, so only the jobs touching that partition fail. A group's batch
//! is fenced at the epochs held when the group began (not at its commit):
//! a partition lost and claimed back while the group ran is refused, since
//! the group's outbox numbers of it were drawn from a block older than the
//! other node's and its reads of it predate that node's writes; a single
//! job so refused is committed once more under the set held then.
//!
//! On PostgreSQL a group that applies calls of the node's own intake (not
//! taken from the inbox) first looks, in its own transaction and under the
//! same fence, whether the inbox of those calls' partitions holds a record
//! (an earlier call of their customer, acked elsewhere, may wait there):
//! if so nothing is written, the jobs with calls of such a partition are
//! turned into [`Job::Queued`] jobs that write their calls to the inbox,
//! and the group is committed again ([`CommitThread::queue_behind_inbox`];
//! `docs/scale-out.md`, "The order of one customer's calls").

use super::faults::{self, Fault, FaultPolicy};
use super::metrics::Metrics;
use super::stats;
use super::store::{self, Store, StoreError, TimerChanges, TimerEntry};
use crate::compile::bytecode::Bundle;
use crate::runtime::input::Call;
use crate::runtime::names::NameMap;
use crate::runtime::{ApplyError, CustomerState, Effects, Engine, Input, Kind, Millis};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

/// The most jobs taken into one group commit.
pub const GROUP_JOBS_MAX: usize = 512;
/// The most inputs applied in one group commit (bounds the batch size).
pub const GROUP_INPUTS_MAX: usize = 20_000;
/// Capacity of the job channel: further requests wait (backpressure).
pub const JOB_CHANNEL_CAPACITY: usize = 1024;

/// What the commit thread needs from the interpreter: the pure step.
/// [`Engine`] implements it; tests use small fakes.
pub trait Interpreter: Send + Sync {
    /// On `Err` the state may be half changed; the caller drops it.
    fn apply(&self, state: &mut CustomerState, input: &Input) -> Result<Effects, ApplyError>;

    /// Moves enrollments to a new version by label ([`Engine::migrate`]);
    /// returns how many moved.
    fn migrate(&self, state: &mut CustomerState, now: crate::runtime::Millis) -> usize {
        let _ = (state, now);
        0
    }
}

impl Interpreter for Engine {
    fn apply(&self, state: &mut CustomerState, input: &Input) -> Result<Effects, ApplyError> {
        Engine::apply(self, state, input)
    }

    fn migrate(&self, state: &mut CustomerState, now: crate::runtime::Millis) -> usize {
        Engine::migrate(self, state, now)
    }
}

/// The loaded workspace: the current bundle, the interpreter running it (and
/// any older versions still referenced), and the bundle's store key.
pub struct Runtime {
    pub bundle: Arc<Bundle>,
    pub bundle_key: String,
    pub interpreter: Arc<dyn Interpreter>,
    /// Every bundle kept for enrollments pinned to older versions.
    pub retained: Vec<Arc<Bundle>>,
}

pub type SharedRuntime = Arc<RwLock<Arc<Runtime>>>;

pub fn current(runtime: &SharedRuntime) -> Arc<Runtime> {
    runtime.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Why a job failed. Inputs were already validated, so this means the store
/// failed or the interpreter panicked (a bug): nothing of the job was stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("storage failed: {0}")]
    Storage(String),
    /// The store refused a partition this node does not own (PostgreSQL,
    /// `kv/pg.rs`): nothing of the job was stored; jobs of other
    /// partitions are not held up by it.
    #[error("storage failed: {0}")]
    PartitionNotOwned(String),
    #[error("internal error while applying the input (nothing was stored)")]
    Panicked,
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl From<sled::Error> for CommitError {
    fn from(error: sled::Error) -> Self {
        CommitError::Storage(error.to_string())
    }
}

impl From<StoreError> for CommitError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::PartitionNotOwned { .. } => CommitError::PartitionNotOwned(error.to_string()),
            error => CommitError::Storage(error.to_string()),
        }
    }
}

/// One request to the commit thread.
pub enum Job {
    /// Validated Segment calls (one HTTP request): all or nothing.
    Ingest {
        calls: Vec<Call>,
        /// The inbox record the calls were taken from (`inbox.rs`), removed
        /// in the same batch as their effects.
        inbox: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), CommitError>>,
    },
    /// Due timer entries found by the timer task, oldest first.
    Wake {
        timers: Vec<TimerEntry>,
        reply: oneshot::Sender<Result<usize, CommitError>>,
    },
    /// Erase a customer; answers whether there was one.
    Erase {
        customer: String,
        reply: oneshot::Sender<Result<bool, CommitError>>,
    },
    /// Retry failing customers now, parked or not (`POST
    /// /v1/customers/ID/retry`, and every reload). Answers how many have no
    /// fault left (recovered).
    Retry {
        customers: Vec<String>,
        reply: oneshot::Sender<Result<usize, CommitError>>,
    },
    /// Install a newly loaded workspace: migrate enrollments whose journeys say
    /// `on update migrate`, then make it current.
    Install {
        runtime: Arc<Runtime>,
        reply: oneshot::Sender<Result<usize, CommitError>>,
    },
    /// Commit what came before, then stop the thread.
    Stop { reply: oneshot::Sender<()> },
    /// An [`Job::Ingest`] of the node's own intake whose calls wait behind
    /// their partitions' inbox (PostgreSQL: the group's look found a record
    /// there, [`CommitThread::queue_behind_inbox`]): made by the commit
    /// thread alone, it writes `records` (the calls as inbox records,
    /// `inbox.rs`) in the group's batch instead of applying them, and is
    /// answered, durable, with the group.
    Queued {
        records: Vec<(Vec<u8>, Vec<u8>)>,
        reply: oneshot::Sender<Result<(), CommitError>>,
    },
    /// The next step of a segment broadcast (`broadcast.rs`), committed
    /// alone: up to `batch` customers visited, the members entered and the
    /// record advanced in one batch. `step` is decided by the commit thread.
    /// Answers whether the broadcast is still running.
    Broadcast {
        id: u64,
        batch: usize,
        step: Option<Box<super::broadcast::Step>>,
        reply: oneshot::Sender<Result<bool, CommitError>>,
    },
}

/// Asks the commit thread to finish what it has and stop.
pub async fn stop(committer: &Committer) {
    let (reply, answer) = oneshot::channel();
    if committer.sender.send(Job::Stop { reply }).await.is_ok() {
        let _ = answer.await;
    }
}

/// Handle to submit jobs.
#[derive(Clone)]
pub struct Committer {
    pub sender: mpsc::Sender<Job>,
}

impl Committer {
    pub async fn ingest(&self, calls: Vec<Call>) -> Result<(), CommitError> {
        let (reply, answer) = oneshot::channel();
        let inbox = None;
        self.send(Job::Ingest { calls, inbox, reply }, answer).await
    }

    /// [`Committer::ingest`] of calls taken from the inbox record `key`,
    /// which the same batch removes (`inbox.rs`).
    pub async fn ingest_from_inbox(&self, calls: Vec<Call>, key: Vec<u8>) -> Result<(), CommitError> {
        let (reply, answer) = oneshot::channel();
        let inbox = Some(key);
        self.send(Job::Ingest { calls, inbox, reply }, answer).await
    }

    pub async fn wake(&self, timers: Vec<TimerEntry>) -> Result<usize, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Wake { timers, reply }, answer).await
    }

    pub async fn erase(&self, customer: String) -> Result<bool, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Erase { customer, reply }, answer).await
    }

    /// Retries a failing customer now; `Ok(None)` when it has no fault
    /// record, else whether the retry applied every held input.
    pub async fn retry(&self, customer: String) -> Result<Option<bool>, CommitError> {
        let (reply, answer) = oneshot::channel();
        // The answer counts 1 for "no fault" and 2 for "recovered".
        let answer = self
            .send(
                Job::Retry {
                    customers: vec![customer],
                    reply,
                },
                answer,
            )
            .await?;
        Ok(match answer {
            0 => Some(false),
            1 => None,
            _ => Some(true),
        })
    }

    /// Commits the next step of broadcast `id`; answers whether it is still running.
    pub async fn broadcast(&self, id: u64, batch: usize) -> Result<bool, CommitError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Broadcast {
            id,
            batch,
            step: None,
            reply,
        };
        self.send(job, answer).await
    }

    pub async fn install(&self, runtime: Arc<Runtime>) -> Result<usize, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Install { runtime, reply }, answer).await
    }

    async fn send<T>(&self, job: Job, answer: oneshot::Receiver<Result<T, CommitError>>) -> Result<T, CommitError> {
        self.sender.send(job).await.map_err(|_| CommitError::ShuttingDown)?;
        answer.await.map_err(|_| CommitError::ShuttingDown)?
    }
}

/// Shared state the commit thread publishes after each durable write.
#[derive(Clone)]
pub struct Published {
    /// The highest outbox sequence number that is durable (sinks read up to it).
    pub committed_seq: Arc<watch::Sender<u64>>,
    /// Stats counters as of the last durable write.
    pub stats: Arc<Mutex<HashMap<String, i64>>>,
    /// Woken when a timer was added (the timer task may need to sleep less).
    pub timers_changed: Arc<tokio::sync::Notify>,
    pub metrics: Arc<Metrics>,
}

/// The commit thread's own state.
pub struct CommitThread {
    store: Store,
    runtime: SharedRuntime,
    published: Published,
    next_seq: u64,
    /// The next unused timer chunk number.
    next_timer_chunk: u64,
    /// The counters as of the last batch applied (ahead of the published
    /// ones while a flush is in flight), summed over partitions.
    counters: HashMap<String, i64>,
    /// The counters' records by (partition, name) as of the last batch
    /// applied ([`store::stat_key_in`]: on sled all at partition -1),
    /// read at the first write and again after a failed one.
    partition_counters: Option<HashMap<(i32, String), i64>>,
    /// Failing customers (those with a fault record), and whether each is
    /// parked: lanes read a customer's record only when it is listed here.
    faulted: HashMap<String, bool>,
    /// On PostgreSQL: the partitions held when the counters and failing
    /// customers above were read. Another set (a partition claimed, lost or
    /// given up) has them read again before the next group, since another
    /// node may have changed them meanwhile (`--spread`).
    owned_seen: Option<super::kv::pg::Owned>,
    /// On PostgreSQL, the partitions held (with their epochs) when the
    /// group being committed began: its batch is fenced at these epochs
    /// (`Kv::apply_batch_held`), so a partition lost and claimed back
    /// while the group ran refuses the group's numbers and reads of it.
    group_held: Option<super::kv::pg::Owned>,
    /// A job refused for a held set that moved while it ran is being
    /// committed again (once).
    retrying: bool,
    /// The calls of the group being committed whose id or merge
    /// [`CommitThread::identities`] changed, as they came: a call queued
    /// behind the inbox goes there as it was posted.
    renamed: Vec<Renamed>,
    /// With `--spread`: the version whose migrations ran on the
    /// partitions held (the owner's install ran them on its own; another
    /// node runs them when it first sees the version, and again for
    /// partitions it claims later).
    migrated_for: Option<String>,
    fault_policy: FaultPolicy,
    /// Unsubscribe links for send records (none in tests without a data dir).
    links: Option<Arc<super::unsubscribe::Links>>,
    /// Whether a group's point reads are fetched before its lanes run
    /// ([`store::Prefetched`]): on PostgreSQL, where each read is a round
    /// trip. On sled a read is a lookup in memory, done by the lanes on
    /// their two threads as before (fetched first, on the commit thread
    /// alone, intake was 12–19 % slower in the same run).
    prefetch: bool,
    /// Groups applied but not yet flushed go to the flusher thread.
    flusher: Option<std::sync::mpsc::SyncSender<Flush>>,
    flusher_thread: Option<std::thread::JoinHandle<()>>,
}

/// Work for the flusher thread: make a group durable, then publish and answer.
enum Flush {
    Group {
        jobs: Vec<(Job, usize)>,
        stats: Vec<(String, i64)>,
        committed_seq: Option<u64>,
        timers_added: bool,
        started: Instant,
    },
    /// Answered once every earlier group is flushed and published.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// How a group's write ended.
enum Written {
    Applied(Applied),
    /// Nothing written: the inbox of these partitions holds records the
    /// group's own calls must wait behind.
    HeldUp(Vec<i32>),
}

/// A group whose batch is applied (visible, not yet durable).
struct Applied {
    answers: Vec<usize>,
    stats: Vec<(String, i64)>,
    committed_seq: Option<u64>,
    timers_added: bool,
}

/// The flusher: one `flush` per group (several when they queue up, since a
/// flush covers everything applied before it), then publish, then answer.
/// Applying the next group overlaps with this flush; sled's log is
/// sequential, so a later group is never durable without the earlier ones.
fn run_flusher(store: Store, published: Published, receiver: std::sync::mpsc::Receiver<Flush>) {
    while let Ok(first) = receiver.recv() {
        let mut work = vec![first];
        while let Ok(more) = receiver.try_recv() {
            work.push(more);
        }
        let flushed = store.flush().map_err(CommitError::from);
        if let Err(error) = &flushed {
            tracing::error!(%error, "flush failed: the requests are refused");
        }
        for item in work {
            match item {
                Flush::Group {
                    jobs,
                    stats,
                    committed_seq,
                    timers_added,
                    started,
                } => {
                    if flushed.is_ok() {
                        {
                            let mut published_stats = published.stats.lock().unwrap_or_else(|p| p.into_inner());
                            for (name, value) in stats {
                                published_stats.insert(name, value);
                            }
                        }
                        if let Some(seq) = committed_seq {
                            published.committed_seq.send_replace(seq);
                        }
                        if timers_added {
                            published.timers_changed.notify_one();
                        }
                        published.metrics.commit_latency.observe(started.elapsed());
                    }
                    for (job, answer) in jobs {
                        job.answer(flushed.clone().map(|_| answer));
                    }
                }
                Flush::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

impl CommitThread {
    /// `next_seq` and `next_timer_chunk`: the next unused outbox sequence and
    /// timer chunk numbers.
    pub fn new(
        store: Store,
        runtime: SharedRuntime,
        published: Published,
        next_seq: u64,
        next_timer_chunk: u64,
    ) -> CommitThread {
        let counters = published.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Capacity 1: at most one group waits while another is flushed.
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let flusher_thread = {
            let store = store.clone();
            let published = published.clone();
            std::thread::Builder::new()
                .name("journeyc-flush".into())
                .spawn(move || run_flusher(store, published, receiver))
                .expect("spawn the flusher thread")
        };
        let faulted = faults::all(&store.db).unwrap_or_else(|error| {
            tracing::error!(%error, "reading the failing customers failed");
            HashMap::new()
        });
        let prefetch = matches!(store.db, super::kv::Kv::Postgres(_));
        CommitThread {
            store,
            prefetch,
            runtime,
            published,
            next_seq,
            next_timer_chunk,
            counters,
            partition_counters: None,
            faulted,
            owned_seen: None,
            group_held: None,
            retrying: false,
            renamed: Vec::new(),
            migrated_for: None,
            fault_policy: FaultPolicy::default(),
            links: None,
            flusher: Some(sender),
            flusher_thread: Some(flusher_thread),
        }
    }

    /// How failing customers are retried (the default: [`FaultPolicy::default`]).
    pub fn with_fault_policy(mut self, policy: FaultPolicy) -> CommitThread {
        self.fault_policy = policy;
        self
    }

    /// Whether groups fetch their point reads first (the default: on
    /// PostgreSQL only).
    pub fn with_prefetch(mut self, prefetch: bool) -> CommitThread {
        self.prefetch = prefetch;
        self
    }

    /// Send records carry an unsubscribe link made by `links`.
    pub fn with_links(mut self, links: Arc<super::unsubscribe::Links>) -> CommitThread {
        self.links = Some(links);
        self
    }

    /// Waits until every group handed to the flusher is durable and answered.
    fn drain_flusher(&self) {
        if let Some(flusher) = &self.flusher {
            let (done, wait) = std::sync::mpsc::channel();
            if flusher.send(Flush::Barrier(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    /// Runs until every sender is dropped, then flushes and returns.
    pub fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        let mut stop_reply = None;
        while let Some(first) = receiver.blocking_recv() {
            let mut jobs = Vec::new();
            let mut inputs = 0;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                if let Job::Stop { reply } = job {
                    stop_reply = Some(reply);
                    break;
                }
                inputs += job.input_count();
                jobs.push(job);
                if jobs.len() < GROUP_JOBS_MAX && inputs < GROUP_INPUTS_MAX {
                    next = receiver.try_recv().ok();
                }
            }
            if !jobs.is_empty() {
                self.commit_group(jobs);
            }
            if stop_reply.is_some() {
                break;
            }
        }
        receiver.close();
        drop(self.flusher.take());
        if let Some(thread) = self.flusher_thread.take() {
            let _ = thread.join();
        }
        // Jobs that raced with the stop are refused (their senders see an error).
        if let Err(error) = self.store.flush() {
            tracing::error!(%error, "final flush failed");
        }
        tracing::info!("commit thread stopped");
        if let Some(reply) = stop_reply {
            let _ = reply.send(());
        }
    }

    /// On PostgreSQL, before a group: when the partitions this node holds
    /// changed since the counters and failing customers were read, reads
    /// them again (a partition held before by another node is as that
    /// node left it, not as this one last wrote it); with `--spread`, when
    /// the version run is new here or partitions were claimed, first
    /// migrates the enrollments of the partitions held as that version's
    /// journeys say (idempotent: an enrollment migrated stays put).
    fn follow_ownership(&mut self) {
        let super::kv::Kv::Postgres(pg) = &self.store.db else {
            return;
        };
        let owned = pg.owned();
        let runtime = self.runtime.read().unwrap_or_else(|p| p.into_inner()).clone();
        let changed = self.owned_seen.as_ref() != Some(&owned);
        let new_version = self.migrated_for.as_deref() != Some(runtime.bundle_key.as_str());
        if !changed && !new_version {
            return;
        }
        if new_version {
            // The owner registered the version's names before making it
            // current (`Store::register_names`): read their ids first.
            if let Err(error) = self.store.reread_names() {
                tracing::error!(%error, "reading the names' dictionary failed; trying again before the next group");
                return;
            }
        }
        let claimed = self
            .owned_seen
            .as_ref()
            .is_none_or(|seen| owned.keys().any(|p| !seen.contains_key(p)));
        let migrates = runtime.bundle.journeys.iter().any(|p| p.migrate_on_update);
        let mut migrated = false;
        if pg.spread() && migrates && (new_version || claimed) {
            self.drain_flusher();
            let result = catch_unwind(AssertUnwindSafe(|| {
                super::reload::migrate(&self.store, &runtime, false)
            }))
            .unwrap_or(Err(CommitError::Panicked));
            match result {
                Ok(moved) => {
                    tracing::info!(bundle = %runtime.bundle_key, moved, "migrated the enrollments of the partitions held");
                    migrated = true;
                }
                Err(error) => {
                    tracing::error!(%error, "migrating the partitions held failed; trying again before the next group");
                    return;
                }
            }
        }
        self.migrated_for = Some(runtime.bundle_key.clone());
        if !changed && !migrated {
            return;
        }
        match (faults::all(&self.store.db), super::stats::persisted(&self.store)) {
            (Ok(faulted), Ok(counters)) => {
                self.faulted = faulted;
                *self.published.stats.lock().unwrap_or_else(|p| p.into_inner()) = counters.clone();
                self.counters = counters;
                self.partition_counters = None;
                self.owned_seen = Some(owned);
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "reading the failing customers and counters after an ownership change failed");
            }
        }
    }

    fn commit_group(&mut self, mut jobs: Vec<Job>) {
        self.follow_ownership();
        // Before the group reads or draws anything: what it computes is
        // good for these epochs only.
        self.group_held = match &self.store.db {
            super::kv::Kv::Postgres(pg) => Some(pg.owned()),
            super::kv::Kv::Sled(_) => None,
        };
        // An Install job migrates the whole store in its own pass.
        if jobs.iter().any(|j| matches!(j, Job::Install { .. })) {
            for job in jobs {
                self.commit_alone(job);
            }
            return;
        }
        // A broadcast step is a batch of its own, after the rest.
        if jobs.len() > 1 && jobs.iter().any(|j| matches!(j, Job::Broadcast { .. })) {
            let (steps, rest): (Vec<Job>, Vec<Job>) =
                jobs.into_iter().partition(|j| matches!(j, Job::Broadcast { .. }));
            if !rest.is_empty() {
                self.commit_group(rest);
            }
            for step in steps {
                self.commit_group(vec![step]);
            }
            return;
        }
        let started = Instant::now();
        let seq_before = self.next_seq;
        let outcome = catch_unwind(AssertUnwindSafe(|| self.prepare(&mut jobs)));
        match outcome {
            Ok(Ok((group, answers))) => match self.write(&jobs, group, answers) {
                Ok(Written::HeldUp(held_up)) => {
                    // Nothing was written: the calls that must wait go to
                    // the inbox in the next try, the rest with them (each
                    // try queues at least one more job, so this ends).
                    self.next_seq = seq_before;
                    let jobs = self.queue_behind_inbox(jobs, &held_up);
                    if !jobs.is_empty() {
                        self.commit_group(jobs);
                    }
                }
                Ok(Written::Applied(applied)) => {
                    let work = Flush::Group {
                        jobs: jobs.into_iter().zip(applied.answers).collect(),
                        stats: applied.stats,
                        committed_seq: applied.committed_seq,
                        timers_added: applied.timers_added,
                        started,
                    };
                    if let Some(flusher) = &self.flusher {
                        if let Err(std::sync::mpsc::SendError(Flush::Group { jobs, .. })) = flusher.send(work) {
                            for (job, _) in jobs {
                                job.answer(Err(CommitError::ShuttingDown));
                            }
                        }
                    }
                }
                Err(error) => {
                    self.next_seq = seq_before;
                    // The in-memory counters may be ahead of the store now.
                    self.counters = super::stats::persisted(&self.store).unwrap_or_default();
                    self.partition_counters = None;
                    if matches!(error, CommitError::PartitionNotOwned(_)) && jobs.len() > 1 {
                        // A partition this node does not own: commit the
                        // jobs one by one, so only those touching it fail.
                        for job in jobs {
                            self.commit_group(vec![job]);
                        }
                        return;
                    }
                    if matches!(error, CommitError::PartitionNotOwned(_))
                        && !self.retrying
                        && self.claimed_since_group_began()
                    {
                        // A partition claimed while the job ran (lost and
                        // claimed back, refused at the epoch the group
                        // began with): once more, under the set held now.
                        self.retrying = true;
                        self.commit_group(jobs);
                        self.retrying = false;
                        return;
                    }
                    tracing::error!(%error, "group commit failed");
                    for job in jobs {
                        job.answer(Err(error.clone()));
                    }
                }
            },
            Ok(Err(error)) => {
                self.next_seq = seq_before;
                for job in jobs {
                    job.answer(Err(error.clone()));
                }
            }
            Err(_) => {
                // Some input made the interpreter panic: retry the jobs one by
                // one so only the offending one fails.
                self.next_seq = seq_before;
                if jobs.len() == 1 {
                    tracing::error!("interpreter panicked; the request was refused and nothing stored");
                    self.published.metrics.panics.inc();
                    for job in jobs {
                        job.answer(Err(CommitError::Panicked));
                    }
                } else {
                    for job in jobs {
                        self.commit_group(vec![job]);
                    }
                }
            }
        }
    }

    /// Whether this node claimed a partition (held now at an epoch it did
    /// not hold it at) since the group being committed began. A partition
    /// only dropped does not count: committed again, the job would be
    /// refused the same way, with a reason saying less.
    fn claimed_since_group_began(&self) -> bool {
        match (&self.store.db, &self.group_held) {
            (super::kv::Kv::Postgres(pg), Some(began)) => pg
                .owned()
                .iter()
                .any(|(partition, epoch)| began.get(partition) != Some(epoch)),
            _ => false,
        }
    }

    fn commit_alone(&mut self, job: Job) {
        match job {
            Job::Install { runtime, reply } => {
                self.drain_flusher();
                let result = catch_unwind(AssertUnwindSafe(|| super::reload::migrate(&self.store, &runtime, true)))
                    .unwrap_or(Err(CommitError::Panicked));
                let result = result.and_then(|migrated| {
                    self.store.flush()?;
                    *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = runtime.clone();
                    self.migrated_for = Some(runtime.bundle_key.clone());
                    self.next_timer_chunk = self.store.next_timer_chunk()?;
                    // Positions changed: reload the at-step counters.
                    let counters = super::stats::persisted(&self.store)?;
                    *self.published.stats.lock().unwrap_or_else(|p| p.into_inner()) = counters.clone();
                    self.counters = counters;
                    self.partition_counters = None;
                    Ok(migrated)
                });
                let reloaded = result.is_ok();
                let _ = reply.send(result);
                if reloaded && !self.faulted.is_empty() {
                    // A new workspace may fix what failed: retry every
                    // failing customer, parked ones included.
                    let mut customers: Vec<String> = self.faulted.keys().cloned().collect();
                    customers.sort();
                    let (reply, _) = oneshot::channel();
                    self.commit_group(vec![Job::Retry { customers, reply }]);
                }
            }
            other => self.commit_group(vec![other]),
        }
    }

    /// Applies the jobs: their inputs are sorted into one [`Lane`] per
    /// customer, and the lanes run on up to two threads (customers are
    /// independent; one customer's inputs stay in order on one thread).
    fn prepare(&mut self, jobs: &mut [Job]) -> Result<(Changes, Vec<usize>), CommitError> {
        let runtime = current(&self.runtime);
        let triggered = triggered_journeys(&runtime.bundle);
        let mut reads = store::Prefetched::new(&self.store);
        // The group's point reads in two queries (`store::Prefetched`):
        // by the ids named, then what the lanes' customers need.
        if self.prefetch {
            reads.fetch(self.named_keys(jobs, &triggered))?;
        }
        let (aliases, renamed) = self.identities(jobs, &reads)?;
        self.renamed = renamed;
        let now = super::timers::now_ms();
        for job in jobs.iter_mut() {
            if let Job::Broadcast { id, batch, step, .. } = job {
                *step = super::broadcast::next_step(&self.store, &runtime.bundle, *id, *batch, now)?.map(|mut step| {
                    step.hand_over(&self.store);
                    Box::new(step)
                });
            }
        }
        let jobs: &[Job] = jobs;
        let mut lanes = lanes(jobs);
        let merging = (jobs.iter())
            .any(|job| matches!(job, Job::Ingest { calls, .. } if calls.iter().any(|c| c.merge.is_some())));
        if merging {
            // A merge reads the other id's state as its lane left it: those
            // lanes run first, on this thread.
            order_merges(&mut lanes);
        }
        if self.prefetch {
            let keys = self.lane_keys(&lanes, &triggered, &reads)?;
            reads.fetch(keys)?;
        }
        // On sled the group's first outbox sequence number; on PostgreSQL,
        // where those are drawn per record, one drawn from the same blocks
        // (above every number of a store written before, never given twice).
        let reborn = match &self.store.db {
            super::kv::Kv::Postgres(pg) => pg.outbox_number()?,
            super::kv::Kv::Sled(_) => self.next_seq.max(1),
        };
        let context = LaneContext {
            store: &self.store,
            reads: &reads,
            runtime: &runtime,
            metrics: &self.published.metrics,
            faulted: &self.faulted,
            policy: &self.fault_policy,
            links: self.links.as_deref(),
            now,
            incarnation: match self.counters.get(store::STAT_ERASURES).copied().unwrap_or(0) {
                0 => 0,
                _ => reborn,
            },
            reborn,
        };
        let steps: usize = lanes.iter().map(|lane| lane.steps.len()).sum();
        let mut parts = if steps >= PARALLEL_STEPS_MIN && lanes.len() > 1 && !merging {
            // Split where half of the steps are on each side.
            let mut seen = 0;
            let middle = lanes
                .iter()
                .position(|lane| {
                    seen += lane.steps.len();
                    seen * 2 >= steps
                })
                .map_or(lanes.len() / 2, |at| (at + 1).min(lanes.len() - 1));
            let (first, second) = lanes.split_at(middle);
            let (first, second) = std::thread::scope(|scope| {
                let helper = std::thread::Builder::new()
                    .name("journeyc-lane".into())
                    .spawn_scoped(scope, || context.run(second))
                    .expect("spawn a lane thread");
                let first = context.run(first);
                let second = helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (first, second)
            });
            vec![first?, second?]
        } else {
            vec![context.run(&lanes)?]
        };
        let mut group = parts.pop().unwrap_or_default();
        for part in parts {
            group.absorb(part);
        }
        group.aliases = aliases;
        for anonymous in std::mem::take(&mut group.unmerged) {
            let alias = store::alias_key(&anonymous);
            let indexed = [&[0][..], anonymous.as_bytes()].concat();
            group.aliases.retain(|key, value| {
                let index = key.first() == Some(&store::PREFIX_ALIASES_OF) && key.ends_with(&indexed);
                *key != alias && !(index && value.is_some())
            });
        }
        if self.prefetch {
            self.published.metrics.reads_unfetched.add(reads.misses() as u64);
        }
        // Group order (each input's records are in one part, in order).
        group.records.sort_by_key(|(order, _, _)| *order);
        let mut answers = vec![0; jobs.len()];
        for (job, answer) in group.answers.drain(..) {
            answers[job] += answer;
        }
        for (answer, job) in answers.iter_mut().zip(jobs) {
            if let Job::Broadcast { step: Some(step), .. } = job {
                *answer = usize::from(step.record.state == super::broadcast::Progress::Running);
            }
        }
        Ok((group, answers))
    }

    /// Resolves ids through the alias map and decides the group's merges
    /// (`docs/daemon.md`, "Identity"): every call, erase and retry naming
    /// an alias is for the customer it resolves to; a call's `merge` is
    /// kept only when it is to be done: the other id is not an alias
    /// already, and neither customer is failing. Returns the alias keys
    /// the merges write (`None` removes), for the group's batch.
    fn identities(
        &self,
        jobs: &mut [Job],
        reads: &store::Prefetched<'_>,
    ) -> Result<(AliasWrites, Vec<Renamed>), CommitError> {
        let mut writes = AliasWrites::new();
        let mut renamed = Vec::new();
        // Decided in this group: alias → customer, and aliases per customer.
        let mut local: HashMap<String, String> = HashMap::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        let resolve = |local: &HashMap<String, String>, id: &str| -> Result<String, CommitError> {
            Ok(match local.get(id) {
                Some(user) => user.clone(),
                None => reads.alias(id)?.unwrap_or_else(|| id.to_string()),
            })
        };
        for (index, job) in jobs.iter_mut().enumerate() {
            match job {
                Job::Ingest { calls, inbox, .. } => {
                    // The node's own calls as posted (see `renamed`), on
                    // PostgreSQL, where they may be queued behind the inbox.
                    let posted: Vec<(String, Option<String>)> = match (inbox, &self.store.db) {
                        (None, super::kv::Kv::Postgres(_)) => {
                            calls.iter().map(|c| (c.customer.clone(), c.merge.clone())).collect()
                        }
                        _ => Vec::new(),
                    };
                    for call in calls.iter_mut() {
                        call.customer = resolve(&local, &call.customer)?;
                        let Some(anonymous) = call.merge.take() else {
                            continue;
                        };
                        let user = call.customer.clone();
                        let merged_before = resolve(&local, &anonymous)? != anonymous;
                        let failing = self.faulted.contains_key(&anonymous);
                        if merged_before || anonymous == user || failing {
                            continue;
                        }
                        // What was merged into the anonymous id follows it.
                        let mut moved = self.store.aliases_of(&anonymous)?;
                        moved.retain(|alias| !local.contains_key(alias));
                        moved.extend(
                            local
                                .iter()
                                .filter(|(_, to)| **to == anonymous)
                                .map(|(alias, _)| alias.clone()),
                        );
                        moved.sort();
                        moved.dedup();
                        moved.push(anonymous.clone());
                        let count = match counts.get(&user) {
                            Some(count) => *count,
                            None => self.store.aliases_of(&user)?.len(),
                        };
                        let mut count = count;
                        for alias in moved {
                            writes.insert(store::aliases_of_key(&anonymous, &alias), None);
                            if count < crate::runtime::merge::ALIASES_MAX {
                                count += 1;
                                writes.insert(store::alias_key(&alias), Some(user.clone().into_bytes()));
                                writes.insert(store::aliases_of_key(&user, &alias), Some(Vec::new()));
                                local.insert(alias, user.clone());
                            } else {
                                tracing::warn!(
                                    aliases = crate::runtime::merge::ALIASES_MAX,
                                    "a customer has the most aliases kept; a merged id is not remembered"
                                );
                                writes.insert(store::alias_key(&alias), None);
                                local.remove(&alias);
                            }
                        }
                        // The anonymous id's groups go to the user (the
                        // user's own record of a group wins).
                        for (key, record) in self.pending_groups(&writes, &anonymous)? {
                            writes.insert(key, None);
                            let id = record["id"].as_str().unwrap_or_default();
                            if !self
                                .pending_groups(&writes, &user)?
                                .contains_key(&store::group_key(&user, id))
                            {
                                self.put_group(&mut writes, &user, record)?;
                            }
                        }
                        counts.insert(user, count);
                        call.merge = Some(anonymous);
                    }
                    for (at, (call, (customer, merge))) in calls.iter().zip(posted).enumerate() {
                        if call.customer != customer || call.merge != merge {
                            renamed.push(Renamed {
                                job: index,
                                call: at,
                                customer,
                                merge,
                            });
                        }
                    }
                    for call in calls.iter() {
                        let Some(group) = &call.group else { continue };
                        let key = store::group_key(&call.customer, &group.id);
                        let mut record = (self.pending_groups(&writes, &call.customer)?.remove(&key))
                            .unwrap_or_else(|| serde_json::json!({"id": group.id, "traits": {}}));
                        if let Some(traits) = record["traits"].as_object_mut() {
                            for (name, value) in &group.traits {
                                let known = traits.contains_key(name);
                                if known || traits.len() < crate::runtime::input::GROUP_TRAITS_MAX {
                                    traits.insert(name.clone(), value.clone());
                                }
                            }
                        }
                        record["at"] = serde_json::json!(call.input.at());
                        self.put_group(&mut writes, &call.customer, record)?;
                    }
                }
                Job::Erase { customer, .. } => {
                    *customer = resolve(&local, customer)?;
                    // Nothing this group was to write for it survives.
                    let erased = customer.as_str();
                    writes.retain(|key, value| !side_key_of(key, value.as_deref(), erased));
                    local.retain(|_, user| user != erased);
                }
                Job::Retry { customers, .. } => {
                    for customer in customers.iter_mut() {
                        *customer = resolve(&local, customer)?;
                    }
                }
                Job::Wake { .. }
                | Job::Install { .. }
                | Job::Stop { .. }
                | Job::Broadcast { .. }
                | Job::Queued { .. } => {}
            }
        }
        Ok((writes, renamed))
    }

    /// The keys the jobs read by the ids they name, before those are
    /// resolved through the alias map: each id's alias, record and (when
    /// failing) fault record, and the stats groups of the journeys a call
    /// starts. An id that turns out to be an alias has its customer's
    /// records fetched by [`CommitThread::lane_keys`].
    fn named_keys(&self, jobs: &[Job], triggered: &Triggered<'_>) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        let named = |id: &str, keys: &mut Vec<Vec<u8>>| {
            keys.push(store::alias_key(id));
            keys.push(store::customer_key(id));
            if self.faulted.contains_key(id) {
                keys.push(faults::fault_key(id));
            }
        };
        for job in jobs {
            match job {
                Job::Ingest { calls, .. } => {
                    for call in calls {
                        named(&call.customer, &mut keys);
                        if let Some(anonymous) = &call.merge {
                            named(anonymous, &mut keys);
                        }
                        for journey in triggered.by(&call.input) {
                            keys.push(store::arm_key(&call.customer, journey));
                        }
                    }
                }
                // Timer entries name customers, never aliases.
                Job::Wake { timers, .. } => {
                    for customer in timers.iter().flat_map(|entry| &entry.customers) {
                        keys.push(store::customer_key(customer));
                        if self.faulted.contains_key(customer) {
                            keys.push(faults::fault_key(customer));
                        }
                    }
                }
                Job::Erase { customer, .. } => named(customer, &mut keys),
                Job::Retry { customers, .. } => customers.iter().for_each(|customer| named(customer, &mut keys)),
                Job::Broadcast { .. } | Job::Install { .. } | Job::Stop { .. } | Job::Queued { .. } => {}
            }
        }
        keys
    }

    /// The keys the lanes will read that [`CommitThread::named_keys`] did
    /// not fetch: the records of customers reached through an alias, and
    /// the stats groups of every journey a lane's customer (or an id it
    /// merges) is enrolled in or a lane's input starts. Whatever a lane
    /// reads beyond these (a journey entered through a segment, the
    /// enrollments of a customer reached through an alias) is read when
    /// asked for.
    fn lane_keys(
        &self,
        lanes: &[Lane<'_>],
        triggered: &Triggered<'_>,
        reads: &store::Prefetched<'_>,
    ) -> Result<Vec<Vec<u8>>, CommitError> {
        let mut keys = Vec::new();
        let enrolled = |id: &str, keys: &mut Vec<Vec<u8>>| -> Result<(), CommitError> {
            let key = store::customer_key(id);
            if !reads.holds(&key) {
                keys.push(key);
            } else if let Some((state, _)) = reads.customer_record(id)? {
                keys.extend(
                    state
                        .enrollments
                        .keys()
                        .map(|journey| store::arm_key(id, journey.as_str())),
                );
            }
            Ok(())
        };
        for lane in lanes {
            let customer = lane.customer;
            enrolled(customer, &mut keys)?;
            if self.faulted.contains_key(customer) {
                keys.push(faults::fault_key(customer));
            }
            for (_, step) in &lane.steps {
                match step {
                    Step::Input(input) | Step::Fill { input, .. } => {
                        keys.extend(triggered.by(input).map(|journey| store::arm_key(customer, journey)));
                    }
                    Step::Merge { anonymous, .. } => enrolled(anonymous, &mut keys)?,
                    Step::Wake { .. } | Step::Erase | Step::Retry => {}
                }
            }
        }
        Ok(keys)
    }

    /// A customer's groups as the group's writes so far leave them.
    fn pending_groups(
        &self,
        writes: &AliasWrites,
        customer: &str,
    ) -> Result<BTreeMap<Vec<u8>, serde_json::Value>, CommitError> {
        let prefix = store::group_key(customer, "");
        let mut groups = self.store.groups_of(customer)?;
        for (key, value) in writes
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
        {
            match value {
                Some(value) => groups.insert(key.clone(), serde_json::from_slice(value).unwrap_or_default()),
                None => groups.remove(key),
            };
        }
        Ok(groups)
    }

    /// Writes one group record of a customer, dropping the group updated
    /// longest ago beyond [`store::GROUPS_MAX`].
    fn put_group(
        &self,
        writes: &mut AliasWrites,
        customer: &str,
        record: serde_json::Value,
    ) -> Result<(), CommitError> {
        let key = store::group_key(customer, record["id"].as_str().unwrap_or_default());
        let mut groups = self.pending_groups(writes, customer)?;
        writes.insert(key.clone(), Some(serde_json::to_vec(&record).expect("JSON serializes")));
        groups.insert(key.clone(), record);
        while groups.len() > store::GROUPS_MAX {
            let oldest = (groups.iter())
                .filter(|(other, _)| **other != key)
                .min_by_key(|(_, record)| record["at"].as_i64().unwrap_or(i64::MIN))
                .map(|(key, _)| key.clone());
            let Some(oldest) = oldest else { break };
            groups.remove(&oldest);
            writes.insert(oldest, None);
        }
        Ok(())
    }

    /// Writes the group as one batch, flushes, publishes.
    fn write(&mut self, jobs: &[Job], mut group: Changes, answers: Vec<usize>) -> Result<Written, CommitError> {
        let mut batch = crate::daemon::kv::Batch::default();
        let mut timers = TimerChanges::on(&self.store, self.next_timer_chunk);
        for job in jobs {
            if let Job::Wake { timers: entries, .. } = job {
                for entry in entries {
                    timers.fired(entry);
                }
            }
        }
        for job in jobs {
            match job {
                Job::Ingest { inbox: Some(key), .. } => batch.remove(key.as_slice()),
                Job::Queued { records, .. } => {
                    for (key, value) in records {
                        batch.insert(key.clone(), value.clone());
                    }
                }
                _ => {}
            }
        }
        for erased in &group.erased {
            self.erase_outside_group(&mut batch, erased)?;
        }
        for erased in &group.erased {
            let key = (self.store.customer_partition(erased), store::STAT_ERASURES.to_string());
            *group.partition_deltas.entry(key).or_insert(0) += 1;
        }
        super::broadcast::forget(&self.store, &mut batch, &group.erased)?;
        for job in jobs {
            if let Job::Broadcast { step: Some(step), .. } = job {
                let (key, record) =
                    super::broadcast::finish_step(step, group.records.iter().map(|(_, _, line)| line.as_str()));
                batch.insert(key, record);
                // Members of other nodes' partitions: an inbox record in
                // each of theirs, committed with the step.
                if let (super::kv::Kv::Postgres(pg), false) = (&self.store.db, step.handed.is_empty()) {
                    for (key, value) in super::inbox::records(pg, &self.store, step.handed.clone())? {
                        batch.insert(key, value);
                    }
                }
            }
        }
        for (key, value) in std::mem::take(&mut group.aliases) {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        // Names new to the dictionary go into the batch of the records
        // that use them first (`EncodedState::put`).
        let mut names = Vec::new();
        for write in group.writes.drain(..) {
            let id = &write.customer;
            let chunk = timers.update(id, write.original_timer, write.new_wake)?;
            match write.value {
                Some(value) => names.extend(value.put(&mut batch, store::customer_key(id), chunk)),
                None => batch.remove(store::customer_key(id)),
            }
        }
        if let (super::kv::Kv::Postgres(pg), false) = (&self.store.db, names.is_empty()) {
            if pg.spread() && !matches!(pg.lease(), super::kv::pg::LeaseState::Held(_)) {
                // Only the store's owner gives ids (two nodes giving one id
                // to two names would corrupt both): every name a version
                // has was registered by its install.
                let listed: Vec<&str> = names.iter().map(|(_, name)| name.as_str()).collect();
                return Err(CommitError::Storage(format!(
                    "names without an id in the store's dictionary: {listed:?}; only the store's owner gives ids"
                )));
            }
        }
        let timers_added = timers.earliest_new().is_some();
        let timer_deltas = std::mem::take(&mut timers.waiting_deltas);
        self.next_timer_chunk = timers.write(&self.store, &mut batch)?;
        for (customer, fault) in &group.faults {
            let key = faults::fault_key(customer);
            let was = self.faulted.get(customer).copied();
            let now = fault.as_ref().map(Fault::parked);
            match fault {
                Some(fault) => batch.insert(key, faults::encode(fault)),
                None => batch.remove(key),
            }
            let failing = i64::from(now.is_some()) - i64::from(was.is_some());
            let parked = i64::from(now == Some(true)) - i64::from(was == Some(true));
            let partition = self.store.customer_partition(customer);
            *group
                .partition_deltas
                .entry((partition, faults::STAT_FAILING.to_string()))
                .or_insert(0) += failing;
            *group
                .partition_deltas
                .entry((partition, faults::STAT_PARKED.to_string()))
                .or_insert(0) += parked;
        }
        for ((customer, journey), groups) in &group.groups {
            let key = store::arm_key(customer, journey);
            if groups.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, stats::encode_groups(groups));
            }
        }
        let committed_seq = match &self.store.db {
            super::kv::Kv::Postgres(pg) => Self::write_partitioned_outbox(pg, &group.records, &mut batch)?,
            super::kv::Kv::Sled(_) => {
                // Outbox sequence numbers in group order.
                let first_seq = self.next_seq;
                self.next_seq += group.records.len() as u64;
                if !group.records.is_empty() {
                    let lines = group.records.iter().map(|(_, _, line)| line.as_str());
                    batch.insert(
                        store::outbox_key(first_seq),
                        store::encode_numbered_chunk(first_seq, lines),
                    );
                }
                batch.insert(store::META_SEQ, &self.next_seq.to_be_bytes());
                (!group.records.is_empty()).then(|| self.next_seq - 1)
            }
        };
        for (partition, delta) in timer_deltas {
            *group
                .partition_deltas
                .entry((partition, store::STAT_TIMERS.to_string()))
                .or_insert(0) += delta;
        }
        for (name, delta) in group.stat_deltas.drain() {
            *group
                .partition_deltas
                .entry((crate::daemon::kv::pg::PARTITION_NONE, name))
                .or_insert(0) += delta;
        }
        if self.partition_counters.is_none() {
            self.partition_counters = Some(self.store.counter_records()?.into_iter().collect());
        }
        // The counters' new values, kept once the batch committed.
        let records = self.partition_counters.as_ref().expect("read above");
        let mut counted: Vec<((i32, String), i64)> = Vec::new();
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        for ((partition, name), delta) in &group.partition_deltas {
            if *delta == 0 {
                continue;
            }
            let value = records.get(&(*partition, name.clone())).copied().unwrap_or(0) + delta;
            batch.insert(store::stat_key_in(name, *partition), &value.to_be_bytes());
            counted.push(((*partition, name.clone()), value));
            *totals
                .entry(name.clone())
                .or_insert_with(|| self.counters.get(name).copied().unwrap_or(0)) += delta;
        }
        if let Some(held_up) = self.apply_behind_inbox(jobs, batch)? {
            return Ok(Written::HeldUp(held_up));
        }
        let records = self.partition_counters.as_mut().expect("read above");
        records.extend(counted);
        self.counters.extend(totals.clone());
        let changed_stats: Vec<(String, i64)> = totals.into_iter().collect();
        self.store.names.confirm(&names);
        for (customer, fault) in group.faults.drain(..) {
            match fault {
                Some(fault) => self.faulted.insert(customer, fault.parked()),
                None => self.faulted.remove(&customer),
            };
        }
        Ok(Written::Applied(Applied {
            answers,
            stats: changed_stats,
            committed_seq,
            timers_added,
        }))
    }

    /// Applies the group's `batch`, fenced at the epochs the group began
    /// with. On PostgreSQL, when the group applies calls of the node's own
    /// intake, the same transaction first looks whether the inbox of their
    /// partitions (or of [`PARTITION_NONE`](super::kv::pg::PARTITION_NONE))
    /// holds a record (`Pg::apply_held_behind_inbox`, one statement per
    /// group): if so nothing is written and the answer names those
    /// partitions (`Some`), for [`CommitThread::queue_behind_inbox`].
    fn apply_behind_inbox(
        &self,
        jobs: &[Job],
        batch: crate::daemon::kv::Batch,
    ) -> Result<Option<Vec<i32>>, CommitError> {
        let (super::kv::Kv::Postgres(pg), Some(held)) = (&self.store.db, &self.group_held) else {
            self.store.db.apply_batch_held(batch, self.group_held.as_ref())?;
            return Ok(None);
        };
        let mut behind: BTreeSet<i32> = BTreeSet::new();
        for job in jobs {
            if let Job::Ingest { calls, inbox: None, .. } = job {
                behind.extend(calls.iter().map(|call| self.store.customer_partition(&call.customer)));
            }
        }
        if !behind.is_empty() {
            behind.insert(super::kv::pg::PARTITION_NONE);
        }
        let look = super::kv::pg::InboxLook {
            behind: behind.into_iter().collect(),
            notify: jobs.iter().any(|job| matches!(job, Job::Queued { .. })),
        };
        if look.behind.is_empty() && !look.notify {
            pg.apply_held(held, batch)?;
            return Ok(None);
        }
        let held_up = pg.apply_held_behind_inbox(held, batch, &look)?;
        Ok((!held_up.is_empty()).then_some(held_up))
    }

    /// After the group's look found records in the inbox of `held_up`:
    /// each job of the node's own intake with a call of such a partition
    /// (or every one, when the records are of the layout before
    /// partitions) becomes a [`Job::Queued`] of its calls as they were
    /// posted, written as inbox records of the partitions they resolved to
    /// (`inbox::records_in`, with an id drawn now, after the look, so they
    /// sort after the records found). A job queued holds its partitions
    /// for the group's later jobs: those of the same partitions are queued
    /// too, so the group's calls of a partition keep their order. The
    /// other jobs get their calls back as posted, to be committed again.
    /// **Decision:** a job waits whole (all of its calls, in their
    /// partitions' inbox), as its request went to the inbox whole before
    /// the look moved here (`docs/scale-out.md`, "The order of one
    /// customer's calls").
    fn queue_behind_inbox(&mut self, jobs: Vec<Job>, held_up: &[i32]) -> Vec<Job> {
        let mut posted: HashMap<(usize, usize), (String, Option<String>)> = std::mem::take(&mut self.renamed)
            .into_iter()
            .map(|renamed| ((renamed.job, renamed.call), (renamed.customer, renamed.merge)))
            .collect();
        let every = held_up.contains(&super::kv::pg::PARTITION_NONE);
        let mut waiting: HashSet<i32> = held_up.iter().copied().collect();
        let mut next = Vec::with_capacity(jobs.len());
        for (index, job) in jobs.into_iter().enumerate() {
            let (mut calls, reply) = match job {
                Job::Ingest {
                    calls,
                    inbox: None,
                    reply,
                } => (calls, reply),
                other => {
                    next.push(other);
                    continue;
                }
            };
            let partitions: Vec<i32> = (calls.iter())
                .map(|call| self.store.customer_partition(&call.customer))
                .collect();
            for (at, call) in calls.iter_mut().enumerate() {
                if let Some((customer, merge)) = posted.remove(&(index, at)) {
                    call.customer = customer;
                    call.merge = merge;
                }
            }
            if !every && !partitions.iter().any(|partition| waiting.contains(partition)) {
                next.push(Job::Ingest {
                    calls,
                    inbox: None,
                    reply,
                });
                continue;
            }
            waiting.extend(partitions.iter().copied());
            match super::inbox::records_in(&self.store, calls, partitions) {
                Ok(records) => next.push(Job::Queued { records, reply }),
                Err(error) => {
                    tracing::error!(%error, "writing calls queued behind the inbox failed");
                    let _ = reply.send(Err(CommitError::from(error)));
                }
            }
        }
        next
    }

    /// On PostgreSQL: one outbox chunk per partition the group's records
    /// are of, each record numbered by `Pg::outbox_seq` in group order
    /// (the partition in the number, so the chunk is stored in it). The
    /// chunks' records interleave in number; sinks merge them back into
    /// number order (`Store::outbox_after`), so on one node a sink gets
    /// them in group order, as on sled. `mseq` is not written. Answers the
    /// highest number written.
    fn write_partitioned_outbox(
        pg: &super::kv::pg::Pg,
        records: &[(usize, i32, String)],
        batch: &mut crate::daemon::kv::Batch,
    ) -> Result<Option<u64>, CommitError> {
        let mut chunks: BTreeMap<i32, Vec<(u64, &str)>> = BTreeMap::new();
        let mut highest = None;
        for (_, partition, line) in records {
            let seq = pg.outbox_seq(*partition)?;
            highest = Some(seq);
            chunks.entry(*partition).or_default().push((seq, line.as_str()));
        }
        for chunk in chunks.into_values() {
            batch.insert(store::outbox_key(chunk[0].0), store::encode_seq_chunk(&chunk));
        }
        Ok(highest)
    }

    /// Removes an erased customer's pending outbox entries, dead letters and
    /// sends waiting for a retry that were committed by earlier groups.
    /// The ids merged into the customer go with it: their alias keys,
    /// their records in the outbox, dead letters and retry set, their marks.
    fn erase_outside_group(&self, batch: &mut crate::daemon::kv::Batch, customer: &str) -> Result<(), CommitError> {
        let aliases = self.store.aliases_of(customer)?;
        let mut ids: std::collections::HashSet<&str> = aliases.iter().map(String::as_str).collect();
        ids.insert(customer);
        for alias in &aliases {
            batch.remove(store::alias_key(alias));
            batch.remove(store::aliases_of_key(customer, alias));
        }
        for id in &ids {
            // The mark that has the store compacted and the sinks redacted at
            // the next stop or start (`erasure.rs`).
            batch.insert(super::erasure::erased_key(id), &[][..]);
            for prefix in [store::PREFIX_ARM, store::PREFIX_GROUP] {
                for item in self.store.db.scan_prefix([&[prefix][..], id.as_bytes(), &[0]].concat()) {
                    batch.remove(item?.0);
                }
            }
        }
        let customer_of = |line: &str| {
            serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| {
                let v = v.get("record").cloned().unwrap_or(v);
                v.get("customer").and_then(|c| c.as_str()).map(str::to_string)
            })
        };
        for (key, records) in self.store.outbox_chunks()? {
            let kept: Vec<(u64, String)> = records
                .iter()
                .filter(|(_, line)| !customer_of(line).is_some_and(|c| ids.contains(c.as_str())))
                .cloned()
                .collect();
            if kept.len() == records.len() {
                continue;
            }
            // The key may now be below the chunk's first record: readers find
            // chunks by key <= seq and filter records by seq.
            if kept.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, store::encode_chunk(&kept));
            }
        }
        // Dead letters and sends waiting for a retry both carry the record.
        for prefix in [store::PREFIX_DEAD, store::PREFIX_RETRY] {
            for item in self.store.db.scan_prefix([prefix]) {
                let (key, value) = item?;
                if customer_of(&String::from_utf8_lossy(&value)).is_some_and(|c| ids.contains(c.as_str())) {
                    batch.remove(key);
                }
            }
        }
        Ok(())
    }
}

impl Job {
    fn input_count(&self) -> usize {
        match self {
            Job::Ingest { calls, .. } => calls.len(),
            Job::Wake { timers, .. } => timers.iter().map(|entry| entry.customers.len()).sum(),
            Job::Retry { customers, .. } => customers.len(),
            Job::Erase { .. } | Job::Install { .. } | Job::Stop { .. } | Job::Broadcast { .. } | Job::Queued { .. } => {
                1
            }
        }
    }

    fn answer(self, result: Result<usize, CommitError>) {
        match self {
            Job::Ingest { reply, .. } | Job::Queued { reply, .. } => {
                let _ = reply.send(result.map(|_| ()));
            }
            Job::Wake { reply, .. } => {
                let _ = reply.send(result);
            }
            Job::Erase { reply, .. } => {
                let _ = reply.send(result.map(|n| n > 0));
            }
            Job::Retry { reply, .. } | Job::Install { reply, .. } => {
                let _ = reply.send(result);
            }
            Job::Stop { reply } => {
                let _ = reply.send(());
            }
            Job::Broadcast { reply, .. } => {
                let _ = reply.send(result.map(|running| running > 0));
            }
        }
    }
}

/// Groups with at least this many inputs run their lanes on two threads.
const PARALLEL_STEPS_MIN: usize = 256;

/// A customer's new record, after all its inputs in the group.
struct CustomerWrite {
    customer: String,
    /// The stored wake-up and the timer chunk the stored record names.
    original_timer: Option<(Millis, Option<u64>)>,
    new_wake: Option<Millis>,
    /// The encoded state; `None` removes the customer (erased).
    value: Option<store::EncodedState>,
}

/// Keys a group writes beside the customer records, decided before the
/// lanes run: aliases and groups (`None` removes), the last write of a key
/// counting.
type AliasWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A call of the node's own intake as it was posted, before
/// [`CommitThread::identities`] resolved its id (or dropped its merge):
/// call `call` of job `job` of the group.
struct Renamed {
    job: usize,
    call: usize,
    customer: String,
    merge: Option<String>,
}

/// Whether a side key (alias or group) is `customer`'s: its groups, its
/// aliases' index, an alias that resolves to it.
fn side_key_of(key: &[u8], value: Option<&[u8]>, customer: &str) -> bool {
    let owned = |prefix: u8| {
        key.first() == Some(&prefix)
            && key[1..].starts_with(customer.as_bytes())
            && key.get(1 + customer.len()) == Some(&0)
    };
    owned(store::PREFIX_GROUP)
        || owned(store::PREFIX_ALIASES_OF)
        || (key.first() == Some(&store::PREFIX_ALIAS) && value == Some(customer.as_bytes()))
}

/// One input of a group, for one customer.
enum Step<'g> {
    Input(&'g Input),
    /// Merge this other id of the customer into it, as of `at`
    /// ([`crate::runtime::merge::merge`]).
    Merge {
        anonymous: &'g str,
        at: Millis,
    },
    /// Fill what the profile lacks from the call's context before `input`
    /// ([`crate::runtime::input::context_fill`]).
    Fill {
        fill: &'g BTreeMap<String, crate::compile::bytecode::Value>,
        input: &'g Input,
    },
    /// The customer is listed in a timer entry (`chunk`, or its own key)
    /// handed in by a wake job.
    Wake {
        due: Millis,
        chunk: Option<u64>,
    },
    Erase,
    /// Retry the customer's held inputs now (if it has a fault record).
    Retry,
}

/// Where a step sits: its job, and its place among all inputs of the group.
#[derive(Clone, Copy)]
struct Item {
    job: usize,
    order: usize,
}

/// The journeys an input starts by its own name: by the event a `track`
/// names, or the journey a trigger call names.
struct Triggered<'b> {
    by_event: HashMap<&'b str, Vec<&'b str>>,
}

fn triggered_journeys(bundle: &Bundle) -> Triggered<'_> {
    let mut by_event: HashMap<&str, Vec<&str>> = HashMap::new();
    for program in &bundle.journeys {
        if let crate::compile::bytecode::Trigger::Event { event, .. } = &program.trigger {
            by_event
                .entry(bundle.name(*event))
                .or_default()
                .push(bundle.name(program.name));
        }
    }
    Triggered { by_event }
}

impl<'b> Triggered<'b> {
    fn by<'i>(&'i self, input: &'i Input) -> impl Iterator<Item = &'i str> + 'i {
        let (events, named): (&[&str], Option<&str>) = match input {
            Input::Track { event, .. } => (self.by_event.get(event.as_str()).map_or(&[], Vec::as_slice), None),
            Input::Trigger { journey, .. } => (&[], Some(journey.as_str())),
            Input::Identify { .. } | Input::Wake { .. } => (&[], None),
        };
        events.iter().copied().chain(named)
    }
}

/// One customer's steps of a group, in group order.
struct Lane<'g> {
    customer: &'g str,
    steps: Vec<(Item, Step<'g>)>,
}

/// Sorts the inputs of `jobs` into one lane per customer, lanes in order of
/// each customer's first input.
fn lanes<'g>(jobs: &'g [Job]) -> Vec<Lane<'g>> {
    let mut lanes: Vec<Lane<'g>> = Vec::new();
    let mut lane_of: HashMap<&'g str, usize> = HashMap::new();
    let mut order = 0;
    // Ids merged into another customer in this group: their due wake-ups
    // go with their enrollments and fire under the customer they merge
    // into (at its next input or its own timer entry), never under the
    // merged-away id.
    let merged: HashSet<&str> = (jobs.iter())
        .filter_map(|job| match job {
            Job::Ingest { calls, .. } => Some(calls.iter().filter_map(|call| call.merge.as_deref())),
            _ => None,
        })
        .flatten()
        .collect();
    let mut push = |customer: &'g str, job: usize, step: Step<'g>| {
        let lane = *lane_of.entry(customer).or_insert_with(|| {
            lanes.push(Lane {
                customer,
                steps: Vec::new(),
            });
            lanes.len() - 1
        });
        lanes[lane].steps.push((Item { job, order }, step));
        order += 1;
    };
    for (job, request) in jobs.iter().enumerate() {
        match request {
            Job::Ingest { calls, .. } => {
                for call in calls {
                    if let Some(anonymous) = &call.merge {
                        let at = call.input.at();
                        push(&call.customer, job, Step::Merge { anonymous, at });
                    }
                    if !call.fill.is_empty() {
                        let (fill, input) = (&call.fill, &call.input);
                        push(&call.customer, job, Step::Fill { fill, input });
                    }
                    push(&call.customer, job, Step::Input(&call.input));
                }
            }
            Job::Wake { timers, .. } => {
                for entry in timers {
                    for customer in entry.customers.iter().filter(|c| !merged.contains(c.as_str())) {
                        let step = Step::Wake {
                            due: entry.due,
                            chunk: entry.chunk,
                        };
                        push(customer, job, step);
                    }
                }
            }
            Job::Erase { customer, .. } => push(customer, job, Step::Erase),
            Job::Retry { customers, .. } => {
                for customer in customers {
                    push(customer, job, Step::Retry);
                }
            }
            Job::Broadcast { step, .. } => {
                for call in step.iter().flat_map(|step| &step.calls) {
                    push(&call.customer, job, Step::Input(&call.input));
                }
            }
            // Written to the inbox, not applied.
            Job::Queued { .. } => {}
            Job::Install { .. } | Job::Stop { .. } => unreachable!("committed alone"),
        }
    }
    lanes
}

/// Puts the lane of every id merged in the group before the lane it is
/// merged into (stable otherwise): a merge takes the state that lane left.
fn order_merges(lanes: &mut [Lane<'_>]) {
    let merges: Vec<(&str, &str)> = (lanes.iter())
        .flat_map(|lane| {
            lane.steps.iter().filter_map(move |(_, step)| match step {
                Step::Merge { anonymous, .. } => Some((*anonymous, lane.customer)),
                _ => None,
            })
        })
        .collect();
    let mut depth: HashMap<&str, usize> = HashMap::new();
    // Until nothing deepens: one round per link of the longest chain (a
    // into b, b into c), which is at most as long as the merges.
    for _ in 0..merges.len() {
        let mut deepened = false;
        for (from, into) in &merges {
            let below = depth.get(from).copied().unwrap_or(0) + 1;
            let entry = depth.entry(into).or_insert(0);
            if below > *entry {
                *entry = below;
                deepened = true;
            }
        }
        if !deepened {
            break;
        }
    }
    lanes.sort_by_key(|lane| depth.get(lane.customer).copied().unwrap_or(0));
}

/// What a lane has done to its state since it was loaded, to do again
/// after a failed input.
enum Done<'g> {
    Input(Cow<'g, Input>),
    Merge(Box<CustomerState>, Millis),
}

/// What lanes read: shared by the lane threads.
struct LaneContext<'a> {
    /// The store (the partition of a lane's customer).
    store: &'a Store,
    /// The store's records as the group began, mostly fetched before.
    reads: &'a store::Prefetched<'a>,
    runtime: &'a Runtime,
    metrics: &'a Metrics,
    faulted: &'a HashMap<String, bool>,
    policy: &'a FaultPolicy,
    links: Option<&'a super::unsubscribe::Links>,
    /// The wall clock when the group started (fault times, retry times).
    now: Millis,
    /// The incarnation of a profile this group makes: 0 while the store
    /// never erased anyone, else the group's first outbox sequence.
    incarnation: u64,
    /// The incarnation of a profile made after its id was erased in this
    /// group (the group's first outbox sequence, never 0).
    reborn: u64,
}

/// What some lanes will write: one thread's lanes, then (merged) the group's.
#[derive(Default)]
struct Changes {
    /// Trace lines with the group order of the input that made them and
    /// the partition of the lane's customer (-1 on sled), whose outbox
    /// chunk they go to.
    records: Vec<(usize, i32, String)>,
    writes: Vec<CustomerWrite>,
    /// A lane's counter changes while it runs (then moved to
    /// `partition_deltas`).
    stat_deltas: HashMap<String, i64>,
    /// Counter changes by (partition of the customer, name).
    partition_deltas: HashMap<(i32, String), i64>,
    groups: BTreeMap<(String, String), crate::runtime::stats::Groups>,
    /// Groups read from the store by this thread's lanes (never written).
    stored_groups: HashMap<(String, String), crate::runtime::stats::Groups>,
    erased: Vec<String>,
    /// Fault records to write (`Some`) or remove (`None`).
    faults: Vec<(String, Option<Fault>)>,
    /// `(job, contribution)`: wake-ups fired, or whether an erased customer existed.
    answers: Vec<(usize, usize)>,
    /// Alias keys of the group's merges (set once, by `prepare`).
    aliases: AliasWrites,
    /// Ids whose merge was not done after all (they failed in this group).
    unmerged: Vec<String>,
}

impl Changes {
    /// Adds another thread's lanes (other customers).
    fn absorb(&mut self, mut other: Changes) {
        self.records.append(&mut other.records);
        self.writes.append(&mut other.writes);
        self.erased.append(&mut other.erased);
        self.faults.append(&mut other.faults);
        self.groups.append(&mut other.groups);
        self.answers.append(&mut other.answers);
        self.unmerged.append(&mut other.unmerged);
        for (name, delta) in other.stat_deltas {
            *self.stat_deltas.entry(name).or_insert(0) += delta;
        }
        for (key, delta) in other.partition_deltas {
            *self.partition_deltas.entry(key).or_insert(0) += delta;
        }
    }
}

impl LaneContext<'_> {
    fn run(&self, lanes: &[Lane<'_>]) -> Result<Changes, CommitError> {
        let mut changes = Changes::default();
        for lane in lanes {
            self.run_lane(lane, &mut changes)?;
            // The lane's counters go to its customer's partition (a merged
            // id's too: only the sums over partitions mean anything).
            let partition = self.store.customer_partition(lane.customer);
            for (name, delta) in changes.stat_deltas.drain() {
                *changes.partition_deltas.entry((partition, name)).or_insert(0) += delta;
            }
        }
        Ok(changes)
    }

    /// Loads the customer, applies its steps, and encodes the new state.
    /// The working state is dropped here, on the thread that built it.
    ///
    /// An input that fails leaves the state as it was before it: the lane
    /// goes back to the stored state and applies again the inputs that
    /// succeeded (the interpreter is deterministic), and the failed input
    /// and every later one are held in a [`Fault`] record.
    /// A profile for an id the store has none of; `reborn`: the id was
    /// erased earlier in this group.
    fn new_profile(&self, customer: &str, reborn: bool) -> CustomerState {
        let mut state = CustomerState::new(customer);
        state.incarnation = match reborn {
            true => self.reborn,
            false => self.incarnation,
        };
        state
    }

    fn run_lane(&self, lane: &Lane<'_>, changes: &mut Changes) -> Result<(), CommitError> {
        let customer = lane.customer;
        let stored = self.reads.customer_record(customer)?;
        let existed = stored.is_some();
        let (mut state, original_chunk) = stored.unwrap_or_else(|| (self.new_profile(customer, false), None));
        let mut fault = match self.faulted.contains_key(customer) {
            true => self.reads.fault(customer)?,
            false => None,
        };
        let had_fault = fault.is_some();
        let original_timer = Fault::wake(fault.as_ref(), &state).map(|due| (due, original_chunk));
        let original_positions = stats::positions(&state);
        let records_start = changes.records.len();
        let mut erased = false;
        let mut dirty = false;
        // The inputs applied since the state was loaded, or since it was
        // erased (then `fresh`).
        let mut applied: Vec<Done<'_>> = Vec::new();
        let mut fresh = false;
        for (item, step) in &lane.steps {
            let input = match step {
                Step::Input(input) => Cow::Borrowed(*input),
                Step::Fill { fill, input } => {
                    let profile = match erased {
                        true => &NameMap::new(),
                        false => &state.profile,
                    };
                    match crate::runtime::input::context_fill(profile, fill, input) {
                        Some(identify) => Cow::Owned(identify),
                        None => continue,
                    }
                }
                Step::Wake { due, chunk } => {
                    // The entry was read before this group: if the customer
                    // has moved out of it since (or it was handed over
                    // twice), its record names another one.
                    let listed = original_timer == Some((*due, *chunk));
                    let due_now = Fault::wake(fault.as_ref(), &state).is_some_and(|at| at <= *due);
                    if !listed || erased || !due_now {
                        continue;
                    }
                    changes.answers.push((item.job, 1));
                    if let Some(failing) = fault.as_mut() {
                        // The retry is due.
                        dirty = true;
                        if self.retry(&mut state, failing, *item, changes, &mut applied)? {
                            fault = None;
                        }
                        continue;
                    }
                    Cow::Owned(Input::Wake { at: *due })
                }
                Step::Erase => {
                    changes
                        .answers
                        .push((item.job, usize::from(existed && !erased || dirty)));
                    erased = true;
                    dirty = true;
                    state = self.new_profile(customer, true);
                    fault = None;
                    applied.clear();
                    fresh = true;
                    // This lane's records are the last ones so far.
                    changes.records.truncate(records_start);
                    changes.groups.retain(|(who, _), _| who != customer);
                    changes.erased.push(customer.to_string());
                    continue;
                }
                Step::Merge { anonymous, at } => {
                    if erased {
                        erased = false;
                        state = self.new_profile(customer, true);
                    }
                    // A failing customer merges too: its held inputs are
                    // retried on the merged state.
                    let Some(other) = self.take_merged(anonymous, changes)? else {
                        continue;
                    };
                    dirty = true;
                    self.merge(&mut state, other.clone(), *at, *item, changes)?;
                    applied.push(Done::Merge(Box::new(other), *at));
                    continue;
                }
                Step::Retry => {
                    match fault.as_mut() {
                        None => changes.answers.push((item.job, 1)),
                        Some(failing) => {
                            dirty = true;
                            // Asked for: a fresh series of retries.
                            failing.retries = 0;
                            let recovered = self.retry(&mut state, failing, *item, changes, &mut applied)?;
                            changes.answers.push((item.job, if recovered { 2 } else { 0 }));
                            if recovered {
                                fault = None;
                            }
                        }
                    }
                    continue;
                }
            };
            if erased {
                // Erased earlier in this group; the customer starts afresh.
                erased = false;
                state = self.new_profile(customer, true);
            }
            dirty = true;
            if let Some(failing) = fault.as_mut() {
                // Held behind the failed input, in order.
                failing.hold(input.into_owned());
                continue;
            }
            if let Err(error) = self.apply(&mut state, &input, *item, changes)? {
                tracing::warn!(customer, %error, "input failed; the customer is retried later");
                // Back to the state before the failed input.
                state = match fresh {
                    true => None,
                    false => self.reads.customer_record(customer)?.map(|(state, _)| state),
                }
                .unwrap_or_else(|| self.new_profile(customer, fresh));
                for earlier in &applied {
                    // These succeeded a moment ago on the same state.
                    match earlier {
                        Done::Input(input) => {
                            let _ = self.runtime.interpreter.apply(&mut state, input);
                        }
                        Done::Merge(other, at) => {
                            crate::runtime::merge::merge(&mut state, (**other).clone(), *at);
                        }
                    }
                }
                fault = Some(Fault::new(error, input.into_owned(), self.now, self.policy));
                continue;
            }
            applied.push(Done::Input(input));
        }
        if dirty {
            let (new_wake, value, now_positions) = if erased {
                (None, None, Vec::new())
            } else {
                (
                    Fault::wake(fault.as_ref(), &state),
                    Some(self.reads.store().encode_state(&state)),
                    stats::positions(&state),
                )
            };
            if fault.is_some() || had_fault {
                changes.faults.push((customer.to_string(), fault));
            }
            stats::positions_delta(&original_positions, &now_positions, &mut changes.stat_deltas);
            changes.writes.push(CustomerWrite {
                customer: customer.to_string(),
                original_timer,
                new_wake,
                value,
            });
        }
        Ok(())
    }

    /// Applies a failing customer's held inputs in order. Returns whether
    /// all were applied (the fault is over); otherwise the state is as
    /// before the one that failed again, which stays held with the rest,
    /// and the next retry is scheduled (or the customer parked).
    fn retry(
        &self,
        state: &mut CustomerState,
        fault: &mut Fault,
        item: Item,
        changes: &mut Changes,
        applied: &mut Vec<Done<'_>>,
    ) -> Result<bool, CommitError> {
        let mut held = std::mem::take(&mut fault.held).into_iter();
        while let Some(input) = held.next() {
            let before = state.clone();
            if let Err(error) = self.apply(state, &input, item, changes)? {
                *state = before;
                fault.held = std::iter::once(input).chain(held).collect();
                fault.failed_again(error, self.now, self.policy);
                if fault.parked() {
                    tracing::warn!(customer = %state.id, error = %fault.error, "customer parked after failed retries");
                }
                return Ok(false);
            }
            applied.push(Done::Input(Cow::Owned(input)));
        }
        tracing::info!(customer = %state.id, "failing customer recovered");
        Ok(true)
    }

    /// The state of an id being merged, taken out of the store: as its lane
    /// left it earlier in this group (its write becomes a removal), else as
    /// stored (a removal is added, which also takes it out of the timer
    /// index). `None` when there is nothing to merge: no record, erased in
    /// this group, or failing.
    fn take_merged(&self, anonymous: &str, changes: &mut Changes) -> Result<Option<CustomerState>, CommitError> {
        if changes
            .faults
            .iter()
            .any(|(who, fault)| who == anonymous && fault.is_some())
        {
            // Failing since the group began: it stays itself, not an alias.
            changes.unmerged.push(anonymous.to_string());
            return Ok(None);
        }
        if let Some(write) = changes.writes.iter_mut().rev().find(|w| w.customer == anonymous) {
            let Some(value) = write.value.take() else {
                return Ok(None);
            };
            write.new_wake = None;
            let key = store::customer_key(anonymous);
            return Ok(Some(self.reads.store().decode_state(&key, &value.bytes)?));
        }
        let Some((state, chunk)) = self.reads.customer_record(anonymous)? else {
            return Ok(None);
        };
        changes.writes.push(CustomerWrite {
            customer: anonymous.to_string(),
            original_timer: Fault::wake(None, &state).map(|due| (due, chunk)),
            new_wake: None,
            value: None,
        });
        Ok(Some(state))
    }

    /// Merges `other` into `state` and moves what the store keeps beside a
    /// state: the other id's position gauges, and the stats groups of the enrollments
    /// that go on under the customer; the exits of those that do not are
    /// counted and written as the other id's records.
    fn merge(
        &self,
        state: &mut CustomerState,
        other: CustomerState,
        at: Millis,
        item: Item,
        changes: &mut Changes,
    ) -> Result<(), CommitError> {
        let other_id = other.id.clone();
        // The lane counts the customer's own positions from its stored
        // state to its new one; the other id's leave with it.
        stats::positions_delta(&stats::positions(&other), &[], &mut changes.stat_deltas);
        let moved: Vec<String> = (other.enrollments.keys())
            .filter(|journey| !state.enrollments.contains_key(*journey))
            .map(|journey| journey.to_string())
            .collect();
        let records = crate::runtime::merge::merge(state, other, at);
        for journey in moved {
            let key = (other_id.clone(), journey.clone());
            let groups = match changes.groups.get(&key) {
                Some(groups) => groups.clone(),
                None => self.reads.groups(&other_id, &journey)?,
            };
            changes.groups.insert(key, Default::default());
            changes.groups.insert((state.id.clone(), journey), groups);
        }
        let mut context = stats::RecordContext {
            customer: &other_id,
            deltas: &mut changes.stat_deltas,
            groups: &mut changes.groups,
            stored: &mut changes.stored_groups,
            store: self.reads,
        };
        context.count(&records)?;
        let partition = self.store.customer_partition(&state.id);
        for record in &records {
            changes.records.push((item.order, partition, record.to_json_line()));
        }
        Ok(())
    }

    /// Applies one input and collects its records and counters; an input
    /// the interpreter refuses adds nothing (the inner `Err`).
    fn apply(
        &self,
        state: &mut CustomerState,
        input: &Input,
        item: Item,
        changes: &mut Changes,
    ) -> Result<Result<(), ApplyError>, CommitError> {
        self.metrics.steps_executed.inc();
        let effects = match self.runtime.interpreter.apply(state, input) {
            Ok(effects) => effects,
            Err(error) => {
                self.metrics.customer_errors.inc();
                return Ok(Err(error));
            }
        };
        let mut context = stats::RecordContext {
            customer: &state.id,
            deltas: &mut changes.stat_deltas,
            groups: &mut changes.groups,
            stored: &mut changes.stored_groups,
            store: self.reads,
        };
        context.count(&effects.records)?;
        context.count_arrivals(&effects.arrivals);
        let partition = self.store.customer_partition(&state.id);
        for record in &effects.records {
            if record.kind == Kind::Send {
                self.metrics.sends_enqueued.inc();
            }
            // The recipient as the customer's state has it at the send.
            changes.records.push((
                item.order,
                partition,
                super::unsubscribe::outbox_line(record, state, self.links),
            ));
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Schema;
    use crate::compile::bytecode::SettingsDef;
    use crate::runtime::state::Enrollment;
    use crate::runtime::TraceRecord;
    use store::StoreOptions;

    /// Track: enrol and wait 1 s (one send record). Wake: finish (one exit
    /// record). Customer `boom` makes it panic.
    struct Fake;

    impl Interpreter for Fake {
        fn apply(&self, state: &mut CustomerState, input: &Input) -> Result<Effects, ApplyError> {
            assert_ne!(state.id, "boom", "fake interpreter bug");
            let at = input.at();
            let mut effects = Effects::default();
            match input {
                Input::Track { .. } => {
                    state.enrollments.insert(
                        "j".into(),
                        Box::new(Enrollment {
                            version: "v1".into(),
                            entered_at: at,
                            ordinal: 1,
                            pc: 1,
                            suspended: true,
                            wake_at: Some(at + 1000),
                            loop_counters: vec![],
                            events: vec![],
                            goals_reached: vec![],
                            holdout: false,
                            steps: 1,
                        }),
                    );
                    let mut send = TraceRecord::new(at, &state.id, "j", Kind::Send);
                    send.id = Some(format!("{}-1", state.id));
                    send.message = Some("m".into());
                    effects.records.push(send);
                }
                Input::Wake { .. } => {
                    state.enrollments.clear();
                    let mut exit = TraceRecord::new(at, &state.id, "j", Kind::Exit);
                    exit.reason = Some("end".into());
                    effects.records.push(exit);
                }
                Input::Identify { .. } | Input::Trigger { .. } => {}
            }
            effects.wake_at = state.next_wake();
            Ok(effects)
        }
    }

    fn track(customer: &str, at: Millis) -> Call {
        Call {
            customer: customer.into(),
            input: Input::Track {
                event: "e".into(),
                properties: Default::default(),
                at,
                message_id: None,
            },
            merge: None,
            fill: Default::default(),
            group: None,
        }
    }

    /// A commit thread over a fresh store, driven from a current-thread runtime.
    struct Harness {
        _dir: tempfile::TempDir,
        store: Store,
        committer: Committer,
        published: Published,
        thread: std::thread::JoinHandle<()>,
        tokio: tokio::runtime::Runtime,
    }

    fn fake_runtime(interpreter: Arc<dyn Interpreter>) -> SharedRuntime {
        let bundle = Arc::new(Bundle {
            format_version: crate::compile::bytecode::FORMAT_VERSION,
            names: vec![],
            schema: Schema::default(),
            segments: vec![],
            messages: vec![],
            settings: SettingsDef::default(),
            journeys: vec![],
            history_window_seconds: 0,
        });
        Arc::new(RwLock::new(Arc::new(Runtime {
            bundle,
            bundle_key: "k".into(),
            interpreter,
            retained: vec![],
        })))
    }

    fn start(interpreter: Arc<dyn Interpreter>) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let runtime = fake_runtime(interpreter);
        let published = Published {
            committed_seq: Arc::new(watch::channel(0).0),
            stats: Arc::default(),
            timers_changed: Arc::default(),
            metrics: Arc::default(),
        };
        let (sender, receiver) = mpsc::channel(JOB_CHANNEL_CAPACITY);
        let commit_thread = CommitThread::new(
            store.clone(),
            runtime,
            published.clone(),
            1,
            store.next_timer_chunk().expect("chunk number"),
        )
        // As on PostgreSQL: the lanes read what was fetched (the daemon's
        // tests on sled run them reading the store).
        .with_prefetch(true);
        Harness {
            _dir: dir,
            store,
            committer: Committer { sender },
            published,
            thread: std::thread::spawn(move || commit_thread.run(receiver)),
            tokio: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    #[test]
    fn group_commit_keeps_state_timers_outbox_and_stats_consistent() {
        let Harness {
            _dir,
            store,
            committer,
            published,
            thread: handle,
            tokio,
        } = start(Arc::new(Fake));
        let mut committed_rx = published.committed_seq.subscribe();
        tokio.block_on(async {
            // Concurrent requests share commits; each is answered after it.
            let (a, b) = tokio::join!(
                committer.ingest(vec![track("a", 10_000), track("b", 20_000)]),
                committer.ingest(vec![track("c", 30_000)])
            );
            a.expect("a");
            b.expect("b");
            assert_eq!(*committed_rx.borrow_and_update(), 3);
            assert_eq!(
                store.due_timers(i64::MAX, 10).expect("timers"),
                vec![(11_000, "a".into()), (21_000, "b".into()), (31_000, "c".into())]
            );
            assert_eq!(store.counter(store::STAT_TIMERS).expect("counter"), 3);
            assert_eq!(store.counter("j/j/at/v1/1").expect("counter"), 3);
            assert_eq!(store.counter("j/j/sent/m").expect("counter"), 3);
            // A panicking input fails alone; nothing of it is stored.
            let (bad, good) = tokio::join!(
                committer.ingest(vec![track("boom", 1)]),
                committer.ingest(vec![track("d", 40_000)])
            );
            assert!(matches!(bad, Err(CommitError::Panicked)));
            good.expect("d");
            assert!(store.customer("boom").expect("get").is_none());
            // Wake-ups: due ones fire; an entry that the customer's record
            // does not name fires nothing; an entry handed over twice fires
            // nothing the second time.
            let mut due = store.due_timers_after(None, 21_000, 100).expect("due");
            assert_eq!(due.iter().map(|e| e.customers.len()).sum::<usize>(), 2);
            let handed_twice = due.clone();
            due.push(TimerEntry {
                due: 31_000,
                chunk: Some(999),
                customers: vec!["c".into()],
            });
            assert_eq!(committer.wake(due).await.expect("wake"), 2);
            assert_eq!(committer.wake(handed_twice).await.expect("wake again"), 0);
            assert_eq!(
                store.due_timers(i64::MAX, 10).expect("timers"),
                vec![(31_000, "c".into()), (41_000, "d".into())]
            );
            assert_eq!(store.counter(store::STAT_TIMERS).expect("counter"), 2);
            assert_eq!(store.counter("j/j/exits/end").expect("counter"), 2);
            // Erasure removes the state, the timer and pending outbox records.
            assert!(committer.erase("c".into()).await.expect("erase"));
            assert!(!committer.erase("c".into()).await.expect("erase again"));
            assert!(store.customer("c").expect("get").is_none());
            assert_eq!(
                store.due_timers(i64::MAX, 10).expect("timers"),
                vec![(41_000, "d".into())]
            );
            let outbox = store.outbox_range(0, u64::MAX, 100).expect("outbox");
            assert!(outbox.iter().all(|(_, line)| !line.contains("\"customer\":\"c\"")));
            assert_eq!(store.counter("j/j/at/v1/1").expect("counter"), 1);
            stop(&committer).await;
        });
        handle.join().expect("commit thread");
        // Sequence numbers continue after a restart.
        assert_eq!(store.next_seq().expect("seq"), Some(7));
    }

    /// A wake-up of an anonymous id handed in by the timer task in the same
    /// group as the call that merges the id into a user: it fires under the
    /// user, once, and never under the anonymous id.
    #[test]
    fn a_due_wake_up_of_an_id_merged_in_the_same_group_fires_under_the_user() {
        let Harness {
            _dir,
            store,
            committer,
            published,
            thread,
            tokio,
        } = start(Arc::new(Fake));
        tokio.block_on(async {
            committer.ingest(vec![track("anon", 1_000)]).await.expect("track");
            stop(&committer).await;
        });
        thread.join().expect("commit thread");
        // The same store, with one group made by hand: the wake-up first.
        let mut commits = CommitThread::new(
            store.clone(),
            fake_runtime(Arc::new(Fake)),
            published,
            store.next_seq().expect("seq").unwrap_or(1),
            store.next_timer_chunk().expect("chunk"),
        );
        let due = store.due_timers_after(None, 5_000, 100).expect("due");
        assert_eq!(
            due.iter().flat_map(|e| e.customers.clone()).collect::<Vec<_>>(),
            ["anon"]
        );
        let mut identify = track("user", 3_000);
        identify.input = Input::Identify {
            traits: Default::default(),
            subscriptions: Default::default(),
            at: 3_000,
            message_id: None,
        };
        identify.merge = Some("anon".into());
        commits.commit_group(vec![
            Job::Wake {
                timers: due,
                reply: oneshot::channel().0,
            },
            Job::Ingest {
                calls: vec![identify],
                inbox: None,
                reply: oneshot::channel().0,
            },
        ]);
        commits.drain_flusher();
        let exits = |store: &Store| -> Vec<String> {
            let outbox = store.outbox_range(0, u64::MAX, 100).expect("outbox");
            (outbox.iter())
                .filter_map(|(_, line)| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|line| line["kind"] == "exit")
                .map(|line| line["customer"].as_str().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(
            exits(&store),
            Vec::<String>::new(),
            "nothing fired under the anonymous id"
        );
        assert!(store.customer("anon").expect("get").is_none());
        assert_eq!(
            store.due_timers(i64::MAX, 10).expect("timers"),
            vec![(2_000, "user".into())]
        );
        let due = store.due_timers_after(None, 5_000, 100).expect("due");
        commits.commit_group(vec![Job::Wake {
            timers: due,
            reply: oneshot::channel().0,
        }]);
        commits.drain_flusher();
        assert_eq!(exits(&store), ["user"], "the wake-up fired once, under the user");
        assert_eq!(store.due_timers(i64::MAX, 10).expect("timers"), vec![]);
    }

    /// [`Fake`], noting the threads it ran on.
    #[derive(Default)]
    struct OnThreads(Mutex<std::collections::HashSet<String>>);

    impl Interpreter for OnThreads {
        fn apply(&self, state: &mut CustomerState, input: &Input) -> Result<Effects, ApplyError> {
            let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
            self.0.lock().expect("lock").insert(thread);
            Fake.apply(state, input)
        }
    }

    #[test]
    fn a_large_group_runs_on_two_threads_and_keeps_input_order() {
        let interpreter = Arc::new(OnThreads::default());
        let harness = start(interpreter.clone());
        // 400 customers, each tracked twice, interleaved; one erased between.
        let customers: Vec<String> = (0..400).map(|i| format!("c{i:03}")).collect();
        let calls: Vec<Call> = customers
            .iter()
            .chain(&customers)
            .enumerate()
            .map(|(i, c)| track(c, 1_000 + i as Millis))
            .collect();
        let expected: Vec<String> = calls
            .iter()
            .map(|c| c.customer.clone())
            .filter(|c| c != "c007")
            .collect();
        let committer = &harness.committer;
        harness.tokio.block_on(async {
            let (ingested, erased) = tokio::join!(committer.ingest(calls), async {
                tokio::task::yield_now().await;
                committer.erase("c007".into()).await
            });
            ingested.expect("ingest");
            assert!(erased.expect("erase"));
            stop(committer).await;
        });
        harness.thread.join().expect("commit thread");
        let names = interpreter.0.lock().expect("lock").clone();
        assert!(names.contains("journeyc-lane"), "ran on {names:?}");
        let outbox = harness.store.outbox_range(0, u64::MAX, 10_000).expect("outbox");
        let sent_to: Vec<String> = outbox
            .iter()
            .map(|(_, line)| {
                let record: serde_json::Value = serde_json::from_str(line).expect("json");
                record["customer"].as_str().expect("customer").to_string()
            })
            .collect();
        assert_eq!(sent_to, expected);
        assert!(outbox.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert!(harness.store.customer("c007").expect("get").is_none());
        assert_eq!(harness.store.counter("j/j/sent/m").expect("counter"), 800);
        assert_eq!(harness.store.counter("j/j/at/v1/1").expect("counter"), 399);
        assert_eq!(harness.store.counter(store::STAT_TIMERS).expect("counter"), 399);
    }

    #[test]
    fn a_timer_key_written_before_chunks_still_fires() {
        let harness = start(Arc::new(Fake));
        let mut state = CustomerState::new("z");
        state.enrollments.insert(
            "j".into(),
            Box::new(Enrollment {
                version: "v1".into(),
                entered_at: 0,
                ordinal: 1,
                pc: 1,
                suspended: true,
                wake_at: Some(5_000),
                loop_counters: vec![],
                events: vec![],
                goals_reached: vec![],
                holdout: false,
                steps: 1,
            }),
        );
        let store = &harness.store;
        store.put_customer(&state, None).expect("insert");
        store.db.insert(store::timer_key(5_000, "z"), &[]).expect("insert");
        let due = store.due_timers_after(None, 5_000, 10).expect("due");
        assert_eq!(due[0].chunk, None);
        let committer = &harness.committer;
        harness.tokio.block_on(async {
            assert_eq!(committer.wake(due).await.expect("wake"), 1);
            stop(committer).await;
        });
        harness.thread.join().expect("commit thread");
        assert!(store.due_timers(i64::MAX, 10).expect("due").is_empty());
        assert!(store.customer("z").expect("get").expect("z").enrollments.is_empty());
    }

    #[test]
    fn a_customer_whose_wake_up_moves_leaves_its_chunk() {
        let harness = start(Arc::new(Fake));
        let committer = &harness.committer;
        let store = &harness.store;
        harness.tokio.block_on(async {
            committer
                .ingest(vec![track("a", 10_000), track("b", 10_000)])
                .await
                .expect("ingest");
            let due = store.due_timers_after(None, i64::MAX, 10).expect("due");
            assert_eq!(due.len(), 1, "one chunk: {due:?}");
            assert_eq!(due[0].customers, vec!["a".to_string(), "b".to_string()]);
            committer.ingest(vec![track("a", 20_000)]).await.expect("move a");
            assert_eq!(
                store.due_timers(i64::MAX, 10).expect("due"),
                vec![(11_000, "b".into()), (21_000, "a".into())]
            );
            // The stale entry read before the move fires only b.
            assert_eq!(committer.wake(due).await.expect("wake"), 1);
            assert_eq!(store.due_timers(i64::MAX, 10).expect("due"), vec![(21_000, "a".into())]);
            stop(committer).await;
        });
        harness.thread.join().expect("commit thread");
        assert_eq!(store.counter(store::STAT_TIMERS).expect("counter"), 1);
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    fn lane<'g>(customer: &'g str, merges: &[&'g str]) -> Lane<'g> {
        let item = Item { job: 0, order: 0 };
        let steps = (merges.iter())
            .map(|anonymous| (item, Step::Merge { anonymous, at: 0 }))
            .collect();
        Lane { customer, steps }
    }

    /// A lane runs after the lanes of the ids merged into it, chains too;
    /// the others keep their order.
    #[test]
    fn merged_lanes_run_first() {
        let mut lanes = vec![
            lane("c", &["b"]),
            lane("x", &[]),
            lane("b", &["a"]),
            lane("a", &[]),
            lane("y", &[]),
        ];
        order_merges(&mut lanes);
        let order: Vec<&str> = lanes.iter().map(|lane| lane.customer).collect();
        assert_eq!(order, ["x", "a", "y", "b", "c"]);
    }

    #[test]
    fn side_keys_belong_to_their_customer_alone() {
        assert!(side_key_of(&store::group_key("u1", "acme"), None, "u1"));
        assert!(!side_key_of(&store::group_key("u10", "acme"), None, "u1"));
        assert!(side_key_of(&store::aliases_of_key("u1", "a"), None, "u1"));
        assert!(side_key_of(&store::alias_key("a"), Some(b"u1"), "u1"));
        assert!(!side_key_of(&store::alias_key("a"), Some(b"u10"), "u1"));
        assert!(!side_key_of(&store::arm_key("u1", "j"), None, "u1"));
    }
}
