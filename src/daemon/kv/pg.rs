//! The PostgreSQL backend of [`super::Kv`]: the daemon's ordered key space
//! as one table, `journeyc_kv (partition, key, value)`.
//!
//! **Why tokio-postgres on a runtime of its own.** The store is called from
//! plain threads (the commit thread, its lanes and flusher, the bulk
//! importer) and from the daemon's async handlers alike, all expecting a
//! blocking call as sled gives. The blocking `postgres` crate runs its own
//! runtime inside each call and panics when called from an async task, so
//! this backend owns a small runtime on one thread instead: every call is a
//! future spawned there (a deadpool-postgres pool of connections) and the
//! caller waits for its answer on a channel, like a blocking disk read.
//!
//! **Schema.** Versioned migrations ([`MIGRATIONS`]) are applied on start in
//! one transaction under an advisory lock, each recorded in
//! `journeyc_migrations`. The number of partitions P is written into
//! `journeyc_settings` at the first start (default [`PARTITIONS_DEFAULT`])
//! and read from there afterwards. Each record's `partition` is the hash of
//! the customer id its key names ([`partition_of`]), or [`PARTITION_NONE`]
//! for keys that name no customer; it leads the primary key, so the table
//! can later be distributed by it (Citus) and partitions owned by daemons.
//! A timer chunk lists customers of one partition and its number carries
//! that partition ([`partitioned_chunk`], drawn from the sequence
//! `journeyc_timer_chunks`), so the chunk is stored, fenced and scanned
//! with its customers' partition ([`Pg::scan_owned`]: the timer task reads
//! the chunks of the partitions this node holds only).
//!
//! **Durability.** A batch is one transaction: when [`Pg::apply`] returns,
//! it has committed (PostgreSQL's `synchronous_commit` decides what that
//! means on disk; its default waits for the WAL flush).
//!
//! **One owner at a time: leases fenced by epochs.** Several daemons may
//! open one database. `journeyc_leases` has one row per partition (0..P)
//! and the store's row (partition [`LEASE_STORE`]: the records that name no
//! customer). The node holding the store's row does what names no
//! customer; the others are standbys ([`LeaseState`]). Without `--spread`
//! the holder of the store's lease also claims every partition lease that
//! is free or expired, each at its own epoch ([`Owned`], [`Pg::owned`]),
//! and the standbys hold none; with it every node, standby or not, beats
//! its heart in `journeyc_nodes` and claims or gives up partitions towards
//! its fair share, ceil(P / live nodes) ([`balance`]). A background task
//! renews all held rows every second (or a third of the lease, if
//! shorter); a standby takes the store's lease over once it has expired,
//! raising its epoch by one, then the partitions. Every write transaction ([`Pg::apply`], which the
//! compare-and-write also goes through) first reads the lease rows of the
//! partitions its batch touches `FOR SHARE` and rolls back unless this
//! node still owns each at the epoch it acquired, so an owner that was
//! paused or cut off past its lease can never commit after a takeover: the
//! takeover's update of a row waits for the transactions in flight that
//! share it, and later ones see the new owner. A partition lost that way
//! (or at a renewal) is dropped from the held set and refused from then on,
//! while batches of the other partitions go on committing; the store's
//! lease lost is lost for good. Expiry is judged by the database's clock
//! alone.

use super::{Batch, Bytes};
use crate::daemon::store::{StoreError, StoreResult};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

/// Partitions of a new database.
pub const PARTITIONS_DEFAULT: i32 = 256;
/// The partition of records that name no customer (timers, outbox, sinks'
/// cursors, counters, bundles, metadata, refusals by id, broadcasts).
pub const PARTITION_NONE: i32 = -1;
/// Records fetched per round trip by a scan.
const SCAN_PAGE: i64 = 512;
/// The advisory lock under which migrations run (`"journeyc"` in ASCII, plus
/// one: the value once held by a daemon for its whole run).
const LOCK_MIGRATE: i64 = 0x6a6f_7572_6e65_7964;
/// The lease row of the records that name no customer (partition -1),
/// held by the node that applies; the partitions 0..P have a row each.
pub const LEASE_STORE: i32 = PARTITION_NONE;
/// The longest time between two renewals of a held lease, and between two
/// tries of a standby.
const LEASE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The schema, one step per version, applied in order and never edited
/// once released (a change is a new step).
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE journeyc_settings (name text PRIMARY KEY, value bigint NOT NULL);
     CREATE TABLE journeyc_kv (
         partition integer NOT NULL,
         key bytea NOT NULL,
         value bytea NOT NULL,
         PRIMARY KEY (partition, key)
     );
     CREATE INDEX journeyc_kv_by_key ON journeyc_kv (key);
     CREATE SEQUENCE journeyc_ids MINVALUE 0 START 0;",
    ),
    (
        2,
        "CREATE TABLE journeyc_leases (
         partition integer PRIMARY KEY,
         owner text NOT NULL,
         epoch bigint NOT NULL,
         expires_at timestamptz NOT NULL
     );",
    ),
    (3, "CREATE SEQUENCE journeyc_timer_chunks MINVALUE 0 START 0;"),
    (
        4,
        "CREATE SEQUENCE IF NOT EXISTS journeyc_outbox_seq MINVALUE 0 START 0 INCREMENT BY 1024;",
    ),
    (
        5,
        "CREATE TABLE IF NOT EXISTS journeyc_nodes (node text PRIMARY KEY, expires_at timestamptz NOT NULL);",
    ),
    (
        6,
        "CREATE TABLE IF NOT EXISTS journeyc_redactors (redactor text PRIMARY KEY, registered_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE IF NOT EXISTS journeyc_redacted (
         partition integer NOT NULL,
         customer bytea NOT NULL,
         redactor text NOT NULL,
         PRIMARY KEY (partition, customer, redactor)
     );",
    ),
    (
        7,
        "ALTER TABLE journeyc_redactors ADD COLUMN IF NOT EXISTS retired_at timestamptz;",
    ),
];

/// The first byte of an erasure mark's key (`daemon/erasure.rs`), and the
/// byte after it: the marks are the keys in between.
const MARKS: (&[u8], &[u8]) = (b"x", b"y");

/// Outbox numbers a node takes per draw from `journeyc_outbox_seq` (the
/// sequence's increment: each `nextval` is the first of a block of them).
const OUTBOX_NUMBERS_PER_DRAW: u64 = 1024;

/// The flag of a timer chunk number drawn from `journeyc_timer_chunks`
/// ([`Pg::timer_chunk_number`]): such a chunk lists customers of one
/// partition, kept in its low [`CHUNK_PARTITION_BITS`] bits, and is stored
/// in that partition. Numbers without it were counted by the store's
/// `mtimerchunk` (sled, and PostgreSQL stores before per-partition timers,
/// whose chunks are moved at open: `Store::on`).
pub const CHUNK_PARTITIONED: u64 = 1 << 63;
/// The bits of a drawn chunk number that hold its partition (so P is at most
/// 2^16).
pub const CHUNK_PARTITION_BITS: u32 = 16;
/// The most partitions a database may have: the partition of a timer chunk
/// is kept in [`CHUNK_PARTITION_BITS`] bits of its number.
pub const PARTITIONS_MAX: i32 = 1 << CHUNK_PARTITION_BITS;
/// Timer chunk numbers fetched from the sequence per round trip.
const CHUNK_NUMBERS_PER_DRAW: i64 = 1024;

/// The timer chunk number of draw `n` for a chunk of `partition`.
pub fn partitioned_chunk(n: u64, partition: i32) -> u64 {
    CHUNK_PARTITIONED | (n << CHUNK_PARTITION_BITS) | (partition as u64 & (u64::from(u16::MAX)))
}

/// The partition a timer chunk number names, if it was drawn for one.
pub fn chunk_partition(chunk: u64) -> Option<i32> {
    (chunk & CHUNK_PARTITIONED != 0).then_some((chunk & u64::from(u16::MAX)) as i32)
}

/// The partition an outbox sequence number names, if it was drawn for one
/// ([`Pg::outbox_seq`]: the same layout as a drawn timer chunk number,
/// [`partitioned_chunk`]); `None` for a number counted by `mseq` (sled,
/// and PostgreSQL stores written before the outbox was kept per partition).
pub fn seq_partition(seq: u64) -> Option<i32> {
    chunk_partition(seq)
}

fn error(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Postgres(format!("{what}: {e}"))
}

/// The customer id a key names, if any (the layout is in `store.rs`).
fn customer_of(key: &[u8]) -> Option<&[u8]> {
    let (&prefix, rest) = key.split_first()?;
    match prefix {
        // The whole rest: customers, faults, erasure marks, aliases (by the
        // merged id, which a lookup names).
        b'c' | b'f' | b'x' | b'l' => Some(rest),
        // Customer id + 0x00 + …: stats groups, aliases of, groups, refusals
        // by customer.
        b'a' | b'L' | b'G' | b'R' => Some(rest.split(|b| *b == 0).next().unwrap_or(rest)),
        _ => None,
    }
}

/// The partition of a key: FNV-1a (64 bits) of the customer id it names,
/// modulo `partitions`; for a timer chunk drawn for a partition, that one
/// ([`chunk_partition`]), and so for an inbox record, a command or its
/// answer numbered the same way; for an outbox chunk, dead letter or retry
/// entry whose sequence number was drawn for a partition, that one
/// ([`seq_partition`]); for a counter's share or a sink's cursor, the
/// partition it names (`store::stat_key_in`, `store::cursor_key_in`);
/// [`PARTITION_NONE`] when it names none.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    // A timer chunk (`t` + due + number) drawn for a partition.
    if key.len() == 17 && key[0] == b't' {
        let chunk = u64::from_be_bytes(key[9..17].try_into().expect("8 bytes"));
        if let Some(partition) = chunk_partition(chunk).filter(|p| *p < partitions) {
            return partition;
        }
    }
    // An inbox, command or answer record (`i`/`q`/`Q` + number) numbered
    // for a partition (`daemon/inbox.rs`, `daemon/command.rs`).
    if key.len() == 9 && matches!(key[0], b'i' | b'q' | b'Q') {
        let number = u64::from_be_bytes(key[1..9].try_into().expect("8 bytes"));
        if let Some(partition) = chunk_partition(number).filter(|p| *p < partitions) {
            return partition;
        }
    }
    // An outbox chunk (`o` + first sequence number) drawn for a partition.
    if key.len() == 9 && key[0] == b'o' {
        let seq = u64::from_be_bytes(key[1..9].try_into().expect("8 bytes"));
        if let Some(partition) = seq_partition(seq).filter(|p| *p < partitions) {
            return partition;
        }
    }
    // A dead letter or a send waiting for a retry: `d`/`w` + sink + 0x00 +
    // sequence number (u64 BE), in the partition of its number.
    if key.len() >= 10 && matches!(key[0], b'd' | b'w') && key[key.len() - 9] == 0 {
        let seq = u64::from_be_bytes(key[key.len() - 8..].try_into().expect("8 bytes"));
        if let Some(partition) = seq_partition(seq).filter(|p| *p < partitions) {
            return partition;
        }
    }
    // A counter's share or a sink's cursor kept in a partition: `s` + name
    // (or `k` + sink) + 0x00 + u16 BE.
    if key.len() >= 4 && matches!(key[0], b's' | b'k') && key[key.len() - 3] == 0 {
        let partition = i32::from(u16::from_be_bytes([key[key.len() - 2], key[key.len() - 1]]));
        if partition < partitions {
            return partition;
        }
    }
    let Some(customer) = customer_of(key) else {
        return PARTITION_NONE;
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in customer {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % partitions.max(1) as u64) as i32
}

/// Where this node stands with the store's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Another node holds it: reads only, waiting for it to expire.
    Standby,
    /// This node owns the store at this epoch.
    Held(i64),
    /// This node held it and no longer does (taken over, or released at a
    /// stop); it never writes again.
    Lost(String),
}

/// The partition leases a node holds: partition (0..P) → the epoch it
/// acquired it at.
pub type Owned = BTreeMap<i32, i64>;

/// A registered redactor as `GET /v1/redactors` shows it ([`Pg::redactors`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Redactor {
    pub redactor: String,
    pub registered_at: String,
    pub retired_at: Option<String>,
    pub marks_unredacted: i64,
}

/// This node's side of the leases, shared with the futures that check them.
struct Lease {
    /// Unique per process: `journeyc-PID@HOST#ID`.
    node: String,
    duration: std::time::Duration,
    /// The store's lease (partition -1: the records that name no customer).
    state: tokio::sync::watch::Sender<LeaseState>,
    /// The partition leases held, claimed while the store's lease is.
    partitions: tokio::sync::watch::Sender<Owned>,
    /// P, the number of partitions.
    count: i32,
    /// Bumped by every claim of partitions, before they join the held set:
    /// outbox numbers drawn before it are not used for them
    /// ([`Pg::outbox_seq`]).
    claims: std::sync::atomic::AtomicU64,
    /// `--spread`: hold a fair share of the partitions, with or without the
    /// store's lease; otherwise all of them while holding it, none without.
    spread: bool,
}

impl Lease {
    /// The epoch this node writes under, or why it may not write.
    fn epoch(&self) -> StoreResult<i64> {
        match &*self.state.borrow() {
            LeaseState::Held(epoch) => Ok(*epoch),
            LeaseState::Standby => Err(StoreError::Postgres(
                "this node is a standby: another node holds the store's lease".into(),
            )),
            LeaseState::Lost(reason) => Err(StoreError::Postgres(reason.clone())),
        }
    }

    /// The epoch this node writes `partition`'s records under ([`LEASE_STORE`]:
    /// the store's lease), or why it may not.
    fn epoch_of(&self, partition: i32) -> StoreResult<i64> {
        self.epoch_in(partition, None)
    }

    /// [`Lease::epoch_of`] as of `held` (a held set read earlier, e.g. when
    /// a group commit began; `None`: the held set now). The store's lease
    /// is always as of now: it is never claimed back.
    fn epoch_in(&self, partition: i32, held: Option<&Owned>) -> StoreResult<i64> {
        if partition == LEASE_STORE {
            return self.epoch();
        }
        let held = match held {
            Some(held) => held.get(&partition).copied(),
            None => self.partitions.borrow().get(&partition).copied(),
        };
        match held {
            Some(epoch) => Ok(epoch),
            None => Err(StoreError::PartitionNotOwned {
                partition,
                reason: format!(
                    "partition {partition} is not owned by this node ({}): its lease is held by another node or \
                     expired; it commits nothing to it until it takes the lease again",
                    self.node
                ),
            }),
        }
    }

    fn lose(&self, reason: &str) {
        self.state.send_replace(LeaseState::Lost(reason.to_string()));
        self.partitions.send_replace(Owned::new());
    }

    /// Drops `partition` from the held set if it is still held at `epoch`
    /// (a newer claim of it stays).
    fn drop_partition(&self, partition: i32, epoch: i64) {
        self.partitions.send_if_modified(|owned| {
            if owned.get(&partition) == Some(&epoch) {
                owned.remove(&partition);
                true
            } else {
                false
            }
        });
    }

    fn millis(&self) -> i64 {
        self.duration.as_millis().min(i64::MAX as u128) as i64
    }
}

struct Inner {
    pool: deadpool_postgres::Pool,
    /// Where the pool connects, for the inbox's listening connection.
    config: tokio_postgres::Config,
    handle: tokio::runtime::Handle,
    partitions: i32,
    lease: Arc<Lease>,
    /// Timer chunk numbers drawn from `journeyc_timer_chunks` and not yet
    /// used ([`Pg::timer_chunk_number`]).
    chunk_numbers: std::sync::Mutex<VecDeque<u64>>,
    /// The block of outbox numbers drawn from `journeyc_outbox_seq` and not
    /// yet used: (the claims count it was drawn at, next, end).
    outbox_numbers: std::sync::Mutex<(u64, u64, u64)>,
    /// Dropped with the store: stops the runtime's thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Inner {
    /// Releases a held lease, so that the next node (or this one restarted)
    /// takes over at once instead of after the expiry.
    fn drop(&mut self) {
        // The release runs on the backend's own thread: never wait for it
        // from there.
        if std::thread::current().name() == Some("journeyc-postgres") {
            return;
        }
        let (pool, lease) = (self.pool.clone(), self.lease.clone());
        let _ = block(&self.handle, async move { release(&pool, &lease).await });
    }
}

/// What a group commit's transaction looks at in the inbox first
/// ([`Pg::apply_held_behind_inbox`]).
#[derive(Debug, Default, Clone)]
pub struct InboxLook {
    /// The partitions of the calls the group applies itself, and
    /// [`PARTITION_NONE`] (records of the layout before partitions):
    /// if the inbox of one of them holds a record, nothing is written.
    pub behind: Vec<i32>,
    /// The batch writes inbox records (calls queued behind others): the
    /// transaction sends `NOTIFY journeyc_inbox`.
    pub notify: bool,
}

/// How a transaction of [`Pg::apply_as_of`] ended.
#[derive(Debug, PartialEq)]
enum Applied {
    Committed,
    /// The compared key did not hold the value expected: nothing written.
    Unchanged,
    /// The inbox of these partitions holds records: nothing written.
    HeldUp(Vec<i32>),
}

/// A handle on the database. Cheap to clone.
#[derive(Clone)]
pub struct Pg {
    inner: Arc<Inner>,
}

impl Pg {
    /// Connects to `url` (`postgres://user@host:port/db`), applies the
    /// migrations, reads (or at the first start writes) the partition count,
    /// tries once to take the store's lease (valid for `lease`) and starts
    /// the task that renews it, or as a standby keeps trying.
    pub fn open(url: &str, lease: std::time::Duration) -> StoreResult<Pg> {
        Pg::open_as(url, lease, false)
    }

    /// [`Pg::open`], with `spread` (`--spread`): this node holds a fair
    /// share of the partitions ([`fair_share`] among the live nodes of
    /// `journeyc_nodes`) whether or not it holds the store's lease.
    pub fn open_as(url: &str, lease: std::time::Duration, spread: bool) -> StoreResult<Pg> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| error("the PostgreSQL URL", e))?;
        // A node paused in the middle of a transaction keeps its locks,
        // the lease row's among them, which would hold a takeover up for
        // as long as the pause: the server ends such a session (rolling
        // its transaction back) once it has been idle in it for the
        // lease's duration. No transaction of the store waits on its
        // client otherwise.
        let idle = format!(
            "-c idle_in_transaction_session_timeout={}",
            lease.max(std::time::Duration::from_millis(300)).as_millis()
        );
        let options = match config.get_options() {
            Some(given) => format!("{given} {idle}"),
            None => idle,
        };
        config.options(&options);
        let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("journeyc-postgres".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("journeyc-postgres")
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = handle_tx.send(Ok(runtime.handle().clone()));
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                    }
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| error("cannot start the PostgreSQL thread", e))?;
        let handle = handle_rx
            .recv()
            .map_err(|e| error("the PostgreSQL thread", e))?
            .map_err(|e| error("cannot start the PostgreSQL runtime", e))?;
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(8)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| error("the PostgreSQL pool", e))?;
        let (partitions, node) = block(&handle, {
            let pool = pool.clone();
            async move { start(&pool).await }
        })??;
        let (state, _) = tokio::sync::watch::channel(LeaseState::Standby);
        let (owned, _) = tokio::sync::watch::channel(Owned::new());
        let lease = Arc::new(Lease {
            node,
            duration: lease.max(std::time::Duration::from_millis(300)),
            state,
            partitions: owned,
            count: partitions,
            claims: std::sync::atomic::AtomicU64::new(0),
            spread,
        });
        block(&handle, {
            let (pool, lease) = (pool.clone(), lease.clone());
            async move {
                let client = connection(&pool).await?;
                let live = heartbeat(&client, &lease).await?;
                let epoch = acquire(&client, &lease).await?;
                // The partitions first: a node that holds the store's
                // lease starts its work at once.
                balance(&client, &lease, live, epoch.is_some()).await?;
                if let Some(epoch) = epoch {
                    lease.state.send_replace(LeaseState::Held(epoch));
                }
                tokio::spawn(keep_lease(client, lease));
                Ok::<_, StoreError>(())
            }
        })??;
        Ok(Pg {
            inner: Arc::new(Inner {
                pool,
                config,
                handle,
                partitions,
                lease,
                chunk_numbers: std::sync::Mutex::new(VecDeque::new()),
                outbox_numbers: std::sync::Mutex::new((0, 0, 0)),
                _stop: stop,
            }),
        })
    }

    /// Whether this node holds a fair share of the partitions (`--spread`).
    pub fn spread(&self) -> bool {
        self.inner.lease.spread
    }

    /// This node's name in `journeyc_leases.owner`.
    pub fn node(&self) -> &str {
        &self.inner.lease.node
    }

    /// Where this node stands with the lease now.
    pub fn lease(&self) -> LeaseState {
        self.inner.lease.state.borrow().clone()
    }

    /// Follows [`Pg::lease`] as it changes.
    pub fn lease_changes(&self) -> tokio::sync::watch::Receiver<LeaseState> {
        self.inner.lease.state.subscribe()
    }

    /// The partition leases this node holds now, each at its epoch.
    pub fn owned(&self) -> Owned {
        self.inner.lease.partitions.borrow().clone()
    }

    /// Follows [`Pg::owned`] as partitions are claimed, lost and released.
    pub fn ownership_changes(&self) -> tokio::sync::watch::Receiver<Owned> {
        self.inner.lease.partitions.subscribe()
    }

    /// The lease row as the database has it: owner, epoch, and whether it
    /// has expired.
    pub fn lease_holder(&self) -> StoreResult<Option<(String, i64, bool)>> {
        self.run(|pool, _| async move {
            let client = connection(&pool).await?;
            let row = client
                .query_opt(
                    "SELECT owner, epoch, expires_at < now() FROM journeyc_leases WHERE partition = $1",
                    &[&LEASE_STORE],
                )
                .await
                .map_err(|e| error("read the lease", e))?;
            Ok(row.map(|row| (row.get(0), row.get(1), row.get(2))))
        })
    }

    /// Waits until this node holds the lease (at most `limit`), and answers
    /// its epoch; a standby past the limit is refused.
    pub fn wait_for_lease(&self, limit: std::time::Duration) -> StoreResult<i64> {
        let started = std::time::Instant::now();
        loop {
            match self.lease() {
                LeaseState::Held(epoch) => return Ok(epoch),
                LeaseState::Lost(reason) => return Err(StoreError::Postgres(reason)),
                LeaseState::Standby if started.elapsed() >= limit => {
                    let holder = self
                        .lease_holder()?
                        .map_or_else(String::new, |(owner, epoch, _)| format!(" ({owner} at epoch {epoch})"));
                    return Err(StoreError::Postgres(format!(
                        "another journeyc node holds the store's lease{holder}"
                    )));
                }
                LeaseState::Standby => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    /// Gives the lease up (a stop): this node writes no more, and another
    /// takes over at once.
    pub fn release(&self) -> StoreResult<()> {
        let lease = self.inner.lease.clone();
        self.run(|pool, _| async move { release(&pool, &lease).await })
    }

    /// The number of partitions, fixed at the database's first start.
    pub fn partitions(&self) -> i32 {
        self.inner.partitions
    }

    /// The partition of `key` in this database ([`partition_of`]).
    pub fn partition_of(&self, key: &[u8]) -> i32 {
        partition_of(key, self.inner.partitions)
    }

    /// A new timer chunk number for a chunk of `partition`'s customers:
    /// unique across nodes and restarts (drawn from the sequence
    /// `journeyc_timer_chunks`, [`CHUNK_NUMBERS_PER_DRAW`] per round trip),
    /// with the partition in its low bits, so the chunk's key says where it
    /// is stored ([`partition_of`]).
    pub fn timer_chunk_number(&self, partition: i32) -> StoreResult<u64> {
        let mut numbers = self.inner.chunk_numbers.lock().unwrap_or_else(|p| p.into_inner());
        if numbers.is_empty() {
            let drawn: Vec<i64> = self.run(|pool, _| async move {
                let client = connection(&pool).await?;
                let rows = client
                    .query(
                        "SELECT nextval('journeyc_timer_chunks') FROM generate_series(1, $1::bigint)",
                        &[&CHUNK_NUMBERS_PER_DRAW],
                    )
                    .await
                    .map_err(|e| error("draw timer chunk numbers", e))?;
                Ok(rows.into_iter().map(|row| row.get(0)).collect())
            })?;
            numbers.extend(drawn.into_iter().map(|n| n as u64));
        }
        let n = numbers.pop_front().expect("drawn above");
        if n >= 1 << (63 - CHUNK_PARTITION_BITS) {
            return Err(StoreError::Postgres(format!(
                "journeyc_timer_chunks is at {n}: past the numbers a timer chunk can carry"
            )));
        }
        Ok(partitioned_chunk(n, partition))
    }

    /// A new outbox sequence number for a record of `partition`'s
    /// customers: `2^63 | n << 16 | partition` ([`seq_partition`]), `n`
    /// taken from a block of [`OUTBOX_NUMBERS_PER_DRAW`] drawn from
    /// `journeyc_outbox_seq` (one round trip per block). Unique across
    /// nodes and restarts; ascending in the order they are taken on this
    /// node; and above every number the partition's previous owner wrote:
    /// the block is dropped whenever this node claims partitions (the claim
    /// committed after that owner's last write, and the draw after the
    /// claim), and a partition not held is refused
    /// ([`StoreError::PartitionNotOwned`]).
    pub fn outbox_seq(&self, partition: i32) -> StoreResult<u64> {
        self.inner.lease.epoch_of(partition)?;
        Ok(partitioned_chunk(self.outbox_n()?, partition))
    }

    /// A number from the same blocks as [`Pg::outbox_seq`], flagged and
    /// naming partition 0: never handed out twice, above every number
    /// counted by `mseq` before (a customer's incarnation, `commit.rs`).
    pub fn outbox_number(&self) -> StoreResult<u64> {
        Ok(partitioned_chunk(self.outbox_n()?, 0))
    }

    fn outbox_n(&self) -> StoreResult<u64> {
        // Read after the held set (a claim counts, then holds), so a block
        // drawn at this count was drawn after every claim of a partition
        // held now.
        let claims = self.inner.lease.claims.load(std::sync::atomic::Ordering::SeqCst);
        let mut block = self.inner.outbox_numbers.lock().unwrap_or_else(|p| p.into_inner());
        if block.0 != claims || block.1 >= block.2 {
            let first: i64 = self.run(|pool, _| async move {
                let client = connection(&pool).await?;
                let row = client
                    .query_one("SELECT nextval('journeyc_outbox_seq')", &[])
                    .await
                    .map_err(|e| error("draw outbox numbers", e))?;
                Ok(row.get(0))
            })?;
            let first = first as u64;
            *block = (claims, first, first + OUTBOX_NUMBERS_PER_DRAW);
        }
        let n = block.1;
        block.1 += 1;
        if n >= 1 << (63 - CHUNK_PARTITION_BITS) {
            return Err(StoreError::Postgres(format!(
                "journeyc_outbox_seq is at {n}: past the numbers an outbox record can carry"
            )));
        }
        Ok(n)
    }

    fn run<T, F>(&self, work: impl FnOnce(deadpool_postgres::Pool, i32) -> F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = StoreResult<T>> + Send + 'static,
    {
        block(&self.inner.handle, work(self.inner.pool.clone(), self.inner.partitions))?
    }

    pub fn get(&self, key: &[u8]) -> StoreResult<Option<Bytes>> {
        let key = key.to_vec();
        self.run(|pool, partitions| async move {
            let client = connection(&pool).await?;
            let statement = client
                .prepare_cached("SELECT value FROM journeyc_kv WHERE partition = $1 AND key = $2")
                .await
                .map_err(|e| error("get", e))?;
            let row = client
                .query_opt(&statement, &[&partition_of(&key, partitions), &key])
                .await
                .map_err(|e| error("get", e))?;
            Ok(row.map(|row| Bytes::from(row.get::<_, Vec<u8>>(0))))
        })
    }

    /// The values of `keys`, in their order, read in one statement (one
    /// round trip, one transaction) whatever their number: the commit
    /// thread reads a group's records this way before running it.
    pub fn get_many(&self, keys: &[&[u8]]) -> StoreResult<Vec<Option<Bytes>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = keys.iter().map(|key| key.to_vec()).collect();
        self.run(|pool, partitions| async move {
            let client = connection(&pool).await?;
            let statement = client
                .prepare_cached(
                    "SELECT key, value FROM journeyc_kv WHERE (partition, key) IN \
                     (SELECT * FROM unnest($1::integer[], $2::bytea[]))",
                )
                .await
                .map_err(|e| error("get many", e))?;
            let wanted: Vec<i32> = keys.iter().map(|key| partition_of(key, partitions)).collect();
            let found: std::collections::HashMap<Vec<u8>, Vec<u8>> = client
                .query(&statement, &[&wanted, &keys])
                .await
                .map_err(|e| error("get many", e))?
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            Ok(keys
                .iter()
                .map(|key| found.get(key).map(|value| Bytes::from(&value[..])))
                .collect())
        })
    }

    /// Applies `batch` in one transaction; with `condition` `(key,
    /// expected)`, only if `key` holds `expected` then (the row locked
    /// until the commit). Answers whether it applied. The transaction
    /// commits only if this node still holds the lease of every partition
    /// the batch touches at the epoch it acquired it (checked inside it,
    /// see the module's note); otherwise it is rolled back and the error
    /// says who owns the first such partition now. A lost partition is
    /// dropped from the held set ([`Pg::owned`]); the store's lease
    /// (partition -1) lost is lost for good.
    pub fn apply(&self, condition: Option<(&[u8], &[u8])>, batch: Batch) -> StoreResult<bool> {
        Ok(self.apply_as_of(None, condition, batch, &InboxLook::default())? == Applied::Committed)
    }

    /// [`Pg::apply`] fenced at the epochs of `held`, a held set read
    /// before the batch was computed (a group commit's, read when the
    /// group began), not at those held now: a partition lost and claimed
    /// back meanwhile is held at a newer epoch, so the batch is refused
    /// ([`StoreError::PartitionNotOwned`]) and the newer claim stays held.
    /// What such a batch holds was computed before the other node's
    /// tenure: outbox numbers of a block drawn before it (below the
    /// numbers that node wrote, so below a sink's cursor past them), and
    /// state read before that node changed it (`docs/scale-out.md`,
    /// "Cursors per partition").
    pub fn apply_held(&self, held: &Owned, batch: Batch) -> StoreResult<()> {
        self.apply_as_of(Some(held), None, batch, &InboxLook::default())
            .map(|_| ())
    }

    /// [`Pg::apply_held`] of a group commit that applies calls itself
    /// (`commit.rs`): inside the same transaction, under the same fence,
    /// it first looks whether the inbox (`daemon/inbox.rs`, keys `i`…) of
    /// one of `look.behind` holds a record, one statement sent with the
    /// fence's check (no round trip of its own). If one does, nothing is
    /// written (the transaction rolls back) and the answer lists those
    /// partitions: an earlier call of a customer of theirs may wait
    /// there, and the group's calls of them must be queued behind it.
    /// Otherwise the batch commits (with `NOTIFY journeyc_inbox` when
    /// `look.notify`: it writes inbox records) and the answer is empty.
    /// Why the look suffices: under READ COMMITTED the statement sees
    /// every record committed before it began, so every call acked into
    /// the inbox before the group's calls were posted, unless already
    /// applied (and removed), which was then before them; and the fence
    /// holds the partitions at the epochs the group began with, so no
    /// other node applied their records meanwhile (`docs/scale-out.md`,
    /// "The order of one customer's calls").
    pub fn apply_held_behind_inbox(&self, held: &Owned, batch: Batch, look: &InboxLook) -> StoreResult<Vec<i32>> {
        match self.apply_as_of(Some(held), None, batch, look)? {
            Applied::HeldUp(partitions) => Ok(partitions),
            Applied::Committed | Applied::Unchanged => Ok(Vec::new()),
        }
    }

    fn apply_as_of(
        &self,
        held: Option<&Owned>,
        condition: Option<(&[u8], &[u8])>,
        batch: Batch,
        look: &InboxLook,
    ) -> StoreResult<Applied> {
        let (behind, notify) = (look.behind.clone(), look.notify);
        let condition = condition.map(|(key, expected)| (key.to_vec(), expected.to_vec()));
        let lease = self.inner.lease.clone();
        let partitions = self.inner.partitions;
        // A new inbox record is written unfenced by any node
        // (`Pg::apply_unfenced`): one in a fenced batch (a broadcast step
        // handing members of other partitions to their holders) does not
        // need its partition held. Its removal does: only the holder
        // applies a record.
        let mut touched: BTreeSet<i32> = batch
            .writes()
            .filter(|(key, value)| !(value.is_some() && key.first() == Some(&b'i')))
            .map(|(key, _)| partition_of(key, partitions))
            .collect();
        if let Some((key, _)) = &condition {
            touched.insert(partition_of(key, partitions));
        }
        if touched.is_empty() {
            // A batch that writes nothing is fenced at the store's lease,
            // or on a `--spread` applier, which holds none, where its reads
            // were: at the partitions held when its group began (a group
            // of jobs that changed nothing, such as a retry of a customer
            // not failing, was refused there).
            match held.filter(|held| !held.is_empty() && !matches!(self.lease(), LeaseState::Held(_))) {
                Some(held) => touched.extend(held.keys().copied()),
                None => {
                    touched.insert(LEASE_STORE);
                }
            }
        }
        let (fenced, epochs): (Vec<i32>, Vec<i64>) = touched
            .iter()
            .map(|partition| Ok((*partition, lease.epoch_in(*partition, held)?)))
            .collect::<StoreResult<Vec<_>>>()?
            .into_iter()
            .unzip();
        self.run(|pool, partitions| async move {
            let mut client = connection(&pool).await?;
            let tx = client.transaction().await.map_err(|e| error("begin", e))?;
            // In partition order, as the renewal locks them: no deadlock.
            let statement = tx
                .prepare_cached(
                    "SELECT partition, owner, epoch FROM journeyc_leases WHERE partition = ANY($1) \
                     ORDER BY partition FOR SHARE",
                )
                .await
                .map_err(|e| error("check the leases", e))?;
            // The inbox's look, sent with the check (pipelined: one round
            // trip for both), run after it; one index probe per partition.
            let (checked, held_up) = if behind.is_empty() {
                let checked = tx.query(&statement, &[&fenced]).await;
                (checked, Vec::new())
            } else {
                let looking = tx
                    .prepare_cached(
                        "SELECT p FROM unnest($1::integer[]) AS p WHERE EXISTS \
                         (SELECT 1 FROM journeyc_kv WHERE partition = p AND key >= $2 AND key < $3)",
                    )
                    .await
                    .map_err(|e| error("look at the inbox", e))?;
                let (from, to) = (vec![b'i'], vec![b'i' + 1]);
                let fence_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&fenced];
                let look_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&behind, &from, &to];
                let (checked, looked) =
                    tokio::join!(tx.query(&statement, &fence_params), tx.query(&looking, &look_params));
                let looked = looked.map_err(|e| error("look at the inbox", e));
                let held_up: Vec<i32> = match (&checked, looked) {
                    (Err(_), _) => Vec::new(),
                    (Ok(_), looked) => looked?.into_iter().map(|row| row.get(0)).collect(),
                };
                (checked, held_up)
            };
            let holders: BTreeMap<i32, (String, i64)> = checked
                .map_err(|e| error("check the leases", e))?
                .into_iter()
                .map(|row| (row.get(0), (row.get(1), row.get(2))))
                .collect();
            for (partition, epoch) in fenced.iter().zip(&epochs) {
                let holder = holders.get(partition).cloned();
                if holder.as_ref() == Some(&(lease.node.clone(), *epoch)) {
                    continue;
                }
                let reason = lost(&lease, *partition, *epoch, holder);
                if *partition == LEASE_STORE {
                    lease.lose(&reason);
                    return Err(StoreError::Postgres(reason));
                }
                tracing::error!(%reason, "a partition's lease was taken over");
                lease.drop_partition(*partition, *epoch);
                return Err(StoreError::PartitionNotOwned {
                    partition: *partition,
                    reason,
                });
            }
            if let Some((key, expected)) = condition {
                let row = tx
                    .query_opt(
                        "SELECT value FROM journeyc_kv WHERE partition = $1 AND key = $2 FOR UPDATE",
                        &[&partition_of(&key, partitions), &key],
                    )
                    .await
                    .map_err(|e| error("compare", e))?;
                if row.map(|row| row.get::<_, Vec<u8>>(0)) != Some(expected) {
                    return Ok(Applied::Unchanged);
                }
            }
            if !held_up.is_empty() {
                // Rolled back (dropped): nothing of the batch written.
                return Ok(Applied::HeldUp(held_up));
            }
            write_rows(&tx, &batch, partitions).await?;
            if notify {
                tx.batch_execute(&format!("NOTIFY {CHANNEL_INBOX}"))
                    .await
                    .map_err(|e| error("notify", e))?;
            }
            tx.commit().await.map_err(|e| error("commit", e))?;
            Ok(Applied::Committed)
        })
    }

    /// Writes one record outside the lease, from any node: only for
    /// records that no owner holds in memory and that only their writer
    /// names (the inbox, `daemon/inbox.rs`), with `NOTIFY journeyc_inbox`
    /// in its transaction: durable when it returns.
    pub fn put_unfenced(&self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        let mut batch = Batch::default();
        batch.insert(key.to_vec(), value.to_vec());
        self.apply_unfenced(batch, Some(CHANNEL_INBOX))
    }

    /// [`Pg::put_unfenced`] for a whole batch, in one transaction that
    /// also sends `NOTIFY` on `notify`: a standby's request whose
    /// refusals (`r`/`R`, named by fresh ids) and inbox or command record
    /// (`daemon/command.rs`) are kept together, and the standby's removal
    /// of a command's answer once read. The same rule: only records no
    /// owner holds in memory, each named by its writer alone.
    /// `notify`: the channel notified (`None`: none).
    pub fn apply_unfenced(&self, batch: Batch, notify: Option<&'static str>) -> StoreResult<()> {
        self.run(|pool, partitions| async move {
            let mut client = connection(&pool).await?;
            let tx = client.transaction().await.map_err(|e| error("begin", e))?;
            write_rows(&tx, &batch, partitions).await?;
            if let Some(channel) = notify {
                tx.batch_execute(&format!("NOTIFY {channel}"))
                    .await
                    .map_err(|e| error("notify", e))?;
            }
            tx.commit().await.map_err(|e| error("commit", e))
        })
    }

    /// Writes `value` under `key` unless the key holds a value already,
    /// from any node and outside the lease, and answers the value stored
    /// then (this one, or the one another node wrote first): for a record
    /// made once and never changed that every node must agree on (the
    /// unsubscribe links' key, `daemon/unsubscribe.rs`).
    pub fn insert_if_absent_unfenced(&self, key: &[u8], value: &[u8]) -> StoreResult<Bytes> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.run(|pool, partitions| async move {
            let client = connection(&pool).await?;
            let partition = partition_of(&key, partitions);
            client
                .execute(
                    "INSERT INTO journeyc_kv (partition, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (partition, key) DO NOTHING",
                    &[&partition, &key, &value],
                )
                .await
                .map_err(|e| error("insert if absent", e))?;
            // A statement of its own: its snapshot sees the row another
            // node's insert (which this one's waited for) committed.
            let row = client
                .query_one(
                    "SELECT value FROM journeyc_kv WHERE partition = $1 AND key = $2",
                    &[&partition, &key],
                )
                .await
                .map_err(|e| error("insert if absent", e))?;
            Ok(Bytes::from(row.get::<_, Vec<u8>>(0)))
        })
    }

    /// How many records have keys starting with `prefix`: one `count(*)`
    /// over the key index, no value read out.
    pub fn count_prefix(&self, prefix: &[u8]) -> StoreResult<usize> {
        let start = prefix.to_vec();
        let end = super::prefix_end(prefix);
        self.run(|pool, _| async move {
            let client = connection(&pool).await?;
            let row = match &end {
                Some(end) => {
                    client
                        .query_one(
                            "SELECT count(*) FROM journeyc_kv WHERE key >= $1 AND key < $2",
                            &[&start, end],
                        )
                        .await
                }
                None => {
                    client
                        .query_one("SELECT count(*) FROM journeyc_kv WHERE key >= $1", &[&start])
                        .await
                }
            }
            .map_err(|e| error("count", e))?;
            Ok(row.get::<_, i64>(0) as usize)
        })
    }

    /// Sends `NOTIFY channel` (no data written, so from any node): the
    /// owner's word to the standbys that the store's current version
    /// changed ([`CHANNEL_VERSION`]).
    pub fn notify(&self, channel: &'static str) -> StoreResult<()> {
        self.run(|pool, _| async move {
            let client = connection(&pool).await?;
            client
                .batch_execute(&format!("NOTIFY {channel}"))
                .await
                .map_err(|e| error("notify", e))
        })
    }

    /// Notified whenever a node writes to the inbox ([`Pg::put_unfenced`]
    /// sends `NOTIFY journeyc_inbox` in the same transaction): a connection
    /// of its own `LISTEN`s. If it cannot connect or drops, the caller's
    /// polling is left to find the records.
    pub fn inbox_wakeups(&self) -> Arc<tokio::sync::Notify> {
        self.wakeups(CHANNEL_INBOX)
    }

    /// Notified at every notification on `channel` ([`CHANNEL_INBOX`],
    /// [`CHANNEL_COMMANDS`]), as [`Pg::inbox_wakeups`].
    pub fn wakeups(&self, channel: &'static str) -> Arc<tokio::sync::Notify> {
        let wakeups = Arc::new(tokio::sync::Notify::new());
        let config = self.inner.config.clone();
        let notify = wakeups.clone();
        self.inner.handle.spawn(async move {
            if let Err(e) = listen(config, channel, notify).await {
                tracing::warn!(error = %e, channel, "listening for notifications failed; polling only");
            }
        });
        wakeups
    }

    pub fn generate_id(&self) -> StoreResult<u64> {
        self.run(|pool, _| async move {
            let client = connection(&pool).await?;
            let row = client
                .query_one("SELECT nextval('journeyc_ids')", &[])
                .await
                .map_err(|e| error("generate an id", e))?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    /// Registers `redactor` (a data directory whose JSONL sinks deliver
    /// sends, `daemon/erasure.rs`): from now on an erasure mark is dropped
    /// only once it has redacted its files for it ([`Pg::drop_redacted_marks`]).
    /// Outside the lease, from any node; idempotent. A redactor retired
    /// ([`Pg::retire_redactor`]) is refused: marks were dropped without
    /// it since, so its files may hold sends of customers erased
    /// meanwhile, and it must not deliver again.
    pub fn register_redactor(&self, redactor: &str) -> StoreResult<()> {
        let redactor = redactor.to_string();
        self.run(|pool, _| async move {
            let client = connection(&pool).await?;
            let row = client
                .query_one(
                    &format!(
                        "WITH added AS (INSERT INTO journeyc_redactors (redactor) VALUES ($1) \
                           ON CONFLICT (redactor) DO NOTHING RETURNING redactor) \
                         SELECT (SELECT {} FROM journeyc_redactors WHERE redactor = $1)",
                        utc_text("retired_at")
                    ),
                    &[&redactor],
                )
                .await
                .map_err(|e| error("register a redactor", e))?;
            match row.get::<_, Option<String>>(0) {
                None => Ok(()),
                Some(retired_at) => Err(StoreError::Postgres(format!(
                    "this data directory's redactor {redactor} was retired at {retired_at} (DELETE \
                     /v1/redactors/{redactor}): erasure marks were dropped without it since, so its JSONL sink \
                     files may hold sends of customers erased meanwhile. Remove those files and the data \
                     directory's `redactor` file before starting a daemon on it again"
                ))),
            }
        })
    }

    /// Every redactor registered, oldest first: its id, when it was
    /// registered and retired (UTC, RFC 3339), and how many erasure marks
    /// of the database it has not recorded as redacted (none counted for
    /// a retired one). Outside the lease, from any node.
    pub fn redactors(&self) -> StoreResult<Vec<Redactor>> {
        self.run(|pool, _| async move {
            let client = connection(&pool).await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT r.redactor, {}, {}, \
                           CASE WHEN r.retired_at IS NULL THEN (SELECT count(*) FROM journeyc_kv k \
                             WHERE k.key >= $1 AND k.key < $2 AND NOT EXISTS (SELECT 1 FROM journeyc_redacted d \
                               WHERE d.partition = k.partition AND d.customer = substring(k.key from 2) \
                               AND d.redactor = r.redactor)) ELSE 0 END \
                         FROM journeyc_redactors r ORDER BY r.registered_at, r.redactor",
                        utc_text("r.registered_at"),
                        utc_text("r.retired_at")
                    ),
                    &[&MARKS.0, &MARKS.1],
                )
                .await
                .map_err(|e| error("list the redactors", e))?;
            Ok(rows
                .into_iter()
                .map(|row| Redactor {
                    redactor: row.get(0),
                    registered_at: row.get(1),
                    retired_at: row.get(2),
                    marks_unredacted: row.get(3),
                })
                .collect())
        })
    }

    /// Retires `redactor` for good (a data directory that will not start
    /// again): from now on no erasure mark waits for it, and its records
    /// go. Answers its retirement time, or why not: no such redactor, or
    /// retired already (at that time). The marks that waited for it alone
    /// are dropped by their partitions' holders at their next look
    /// (`erasure::work_pending`).
    pub fn retire_redactor(&self, redactor: &str) -> StoreResult<Result<String, Option<String>>> {
        let redactor = redactor.to_string();
        self.run(|pool, _| async move {
            let mut client = connection(&pool).await?;
            let tx = client.transaction().await.map_err(|e| error("begin", e))?;
            let time = utc_text("retired_at");
            let found = tx
                .query_opt(
                    &format!("SELECT {time} FROM journeyc_redactors WHERE redactor = $1 FOR UPDATE"),
                    &[&redactor],
                )
                .await
                .map_err(|e| error("retire a redactor", e))?;
            let Some(found) = found else {
                return Ok(Err(None));
            };
            if let Some(at) = found.get::<_, Option<String>>(0) {
                return Ok(Err(Some(at)));
            }
            let retired = tx
                .query_one(
                    &format!("UPDATE journeyc_redactors SET retired_at = now() WHERE redactor = $1 RETURNING {time}"),
                    &[&redactor],
                )
                .await
                .map_err(|e| error("retire a redactor", e))?;
            tx.execute("DELETE FROM journeyc_redacted WHERE redactor = $1", &[&redactor])
                .await
                .map_err(|e| error("retire a redactor", e))?;
            tx.commit().await.map_err(|e| error("commit", e))?;
            Ok(Ok(retired.get(0)))
        })
    }

    /// How many erasure marks of every partition `redactor` has not
    /// recorded as redacted, and how many of the partitions this node holds
    /// every registered redactor has (which [`Pg::drop_redacted_marks`]
    /// would drop).
    pub fn marks_to_do(&self, redactor: Option<&str>) -> StoreResult<(i64, i64)> {
        let redactor = redactor.map(str::to_string);
        let held: Vec<i32> = self.inner.lease.partitions.borrow().keys().copied().collect();
        self.run(|pool, _| async move {
            let client = connection(&pool).await?;
            let row = client
                .query_one(
                    "SELECT \
                       (SELECT count(*) FROM journeyc_kv k WHERE $2::text IS NOT NULL \
                          AND k.key >= $3 AND k.key < $4 AND NOT EXISTS (SELECT 1 FROM journeyc_redacted d \
                            WHERE d.partition = k.partition AND d.customer = substring(k.key from 2) \
                            AND d.redactor = $2)), \
                       (SELECT count(*) FROM journeyc_kv k WHERE k.partition = ANY($1) \
                          AND k.key >= $3 AND k.key < $4 AND NOT EXISTS (SELECT 1 FROM journeyc_redactors r \
                            WHERE r.retired_at IS NULL AND NOT EXISTS (SELECT 1 FROM journeyc_redacted d WHERE d.partition = k.partition \
                              AND d.customer = substring(k.key from 2) AND d.redactor = r.redactor)))",
                    &[&held, &redactor, &MARKS.0, &MARKS.1],
                )
                .await
                .map_err(|e| error("count the erasure marks", e))?;
            Ok((row.get(0), row.get(1)))
        })
    }

    /// Records that `redactor` has redacted its files for the marks `keys`
    /// (as read before the redaction). Each mark is locked (`FOR SHARE`)
    /// first, so a mark dropped meanwhile gets no record: no record
    /// outlives its mark. Marks are locked in key order here and in
    /// [`Pg::drop_redacted_marks`], so the two never deadlock.
    pub fn record_redacted(&self, redactor: &str, keys: Vec<Vec<u8>>) -> StoreResult<()> {
        let redactor = redactor.to_string();
        self.run(|pool, partitions| async move {
            let mut client = connection(&pool).await?;
            let tx = client.transaction().await.map_err(|e| error("begin", e))?;
            let wanted: Vec<i32> = keys.iter().map(|key| partition_of(key, partitions)).collect();
            let present: Vec<(i32, Vec<u8>)> = tx
                .query(
                    "SELECT partition, key FROM journeyc_kv WHERE (partition, key) IN \
                     (SELECT * FROM unnest($1::integer[], $2::bytea[])) ORDER BY partition, key FOR SHARE",
                    &[&wanted, &keys],
                )
                .await
                .map_err(|e| error("record a redaction", e))?
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let (partitions, customers): (Vec<i32>, Vec<Vec<u8>>) = present
                .into_iter()
                .map(|(partition, key)| (partition, key[1..].to_vec()))
                .unzip();
            tx.execute(
                "INSERT INTO journeyc_redacted (partition, customer, redactor) \
                 SELECT p, c, $3 FROM unnest($1::integer[], $2::bytea[]) AS m(p, c) ON CONFLICT DO NOTHING",
                &[&partitions, &customers, &redactor],
            )
            .await
            .map_err(|e| error("record a redaction", e))?;
            tx.commit().await.map_err(|e| error("commit", e))
        })
    }

    /// Drops the erasure marks of the partitions this node holds that every
    /// registered redactor has recorded as redacted, with those records, in
    /// one transaction fenced by the partitions' leases (a partition no
    /// longer held at its epoch is left to its new holder). When it drops
    /// any, the same transaction writes `vacuum_key` (a request for the
    /// store's owner's `VACUUM FULL`, a fresh value each time, outside the
    /// lease: any node may ask). Answers how many it dropped.
    pub fn drop_redacted_marks(&self, vacuum_key: &[u8]) -> StoreResult<u64> {
        let lease = self.inner.lease.clone();
        let held: Owned = lease.partitions.borrow().clone();
        let vacuum_key = vacuum_key.to_vec();
        self.run(|pool, partitions| async move {
            let mut client = connection(&pool).await?;
            let tx = client.transaction().await.map_err(|e| error("begin", e))?;
            let candidates: Vec<i32> = held.keys().copied().collect();
            let fenced: Vec<i32> = tx
                .query(
                    "SELECT partition, owner, epoch FROM journeyc_leases WHERE partition = ANY($1) \
                     ORDER BY partition FOR SHARE",
                    &[&candidates],
                )
                .await
                .map_err(|e| error("check the leases", e))?
                .into_iter()
                .filter(|row| {
                    let partition: i32 = row.get(0);
                    row.get::<_, String>(1) == lease.node && held.get(&partition) == Some(&row.get::<_, i64>(2))
                })
                .map(|row| row.get(0))
                .collect();
            let dropped: Vec<(i32, Vec<u8>)> = tx
                .query(
                    "DELETE FROM journeyc_kv WHERE (partition, key) IN ( \
                       SELECT k.partition, k.key FROM journeyc_kv k \
                       WHERE k.partition = ANY($1) AND k.key >= $2 AND k.key < $3 \
                       AND NOT EXISTS (SELECT 1 FROM journeyc_redactors r WHERE r.retired_at IS NULL AND NOT EXISTS ( \
                         SELECT 1 FROM journeyc_redacted d WHERE d.partition = k.partition \
                         AND d.customer = substring(k.key from 2) AND d.redactor = r.redactor)) \
                       ORDER BY k.partition, k.key FOR UPDATE) \
                     RETURNING partition, substring(key from 2)",
                    &[&fenced, &MARKS.0, &MARKS.1],
                )
                .await
                .map_err(|e| error("drop the erasure marks", e))?
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            if dropped.is_empty() {
                return Ok(0);
            }
            let (which, customers): (Vec<i32>, Vec<Vec<u8>>) = dropped.iter().cloned().unzip();
            tx.execute(
                "DELETE FROM journeyc_redacted WHERE (partition, customer) IN \
                 (SELECT * FROM unnest($1::integer[], $2::bytea[]))",
                &[&which, &customers],
            )
            .await
            .map_err(|e| error("drop the erasure marks", e))?;
            tx.execute(
                "INSERT INTO journeyc_kv (partition, key, value) \
                 VALUES ($1, $2, int8send(nextval('journeyc_ids'))) \
                 ON CONFLICT (partition, key) DO UPDATE SET value = EXCLUDED.value",
                &[&partition_of(&vacuum_key, partitions), &vacuum_key],
            )
            .await
            .map_err(|e| error("ask for a vacuum", e))?;
            tx.commit().await.map_err(|e| error("commit", e))?;
            Ok(dropped.len() as u64)
        })
    }

    /// Rewrites the table without the old versions of changed and deleted
    /// rows (erasure: `VACUUM FULL`, which cannot run inside a transaction).
    ///
    /// `VACUUM FULL` keeps a deleted row's old version while any snapshot
    /// taken before its deletion committed is still in use, e.g. a lease
    /// renewal that waited on the row locks of the batch that deleted it.
    /// So it first waits (at most the lease's duration) until no client
    /// transaction of the database that began before this call is left.
    pub fn compact(&self) -> StoreResult<()> {
        self.inner.lease.epoch()?;
        let limit = self.inner.lease.duration;
        self.run(move |pool, _| async move {
            let client = connection(&pool).await?;
            let since: String = client
                .query_one("SELECT clock_timestamp()::text", &[])
                .await
                .map_err(|e| error("VACUUM FULL", e))?
                .get(0);
            let started = std::time::Instant::now();
            loop {
                let older: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                         AND pid <> pg_backend_pid() AND backend_type = 'client backend' \
                         AND xact_start < $1::text::timestamptz",
                        &[&since],
                    )
                    .await
                    .map_err(|e| error("VACUUM FULL", e))?
                    .get(0);
                if older == 0 {
                    break;
                }
                if started.elapsed() >= limit {
                    tracing::warn!(
                        transactions = older,
                        "transactions older than the erasure still run; VACUUM FULL may keep rows they can see"
                    );
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            client
                .batch_execute("VACUUM FULL journeyc_kv")
                .await
                .map_err(|e| error("VACUUM FULL", e))
        })
    }

    /// An ordered scan of the keys between `start` and `end`, fetched a
    /// page at a time from whichever end is read.
    pub fn scan(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan {
        Scan {
            pg: self.clone(),
            start,
            end,
            owned_only: false,
            front: VecDeque::new(),
            back: VecDeque::new(),
            done: false,
        }
    }

    /// [`Pg::scan`] of the records in the partitions this node holds now
    /// (the store's partition -1 too while it holds the store's lease),
    /// the held set read again at each page: the work of this node's
    /// partitions only (the timer index), none of a partition lost or
    /// not yet claimed.
    pub fn scan_owned(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan {
        Scan {
            owned_only: true,
            ..self.scan(start, end)
        }
    }

    /// The partitions whose records this node may write now: those held,
    /// and -1 while it holds the store's lease.
    fn writable(&self) -> Vec<i32> {
        let lease = &self.inner.lease;
        let mut partitions: Vec<i32> = lease.partitions.borrow().keys().copied().collect();
        if lease.epoch().is_ok() {
            partitions.push(LEASE_STORE);
        }
        partitions
    }

    /// One page of keys strictly inside the bounds, ascending or descending.
    /// With `partitions`, only the records in those.
    fn page(
        &self,
        start: &Bound<Vec<u8>>,
        end: &Bound<Vec<u8>>,
        descending: bool,
        partitions: Option<Vec<i32>>,
    ) -> StoreResult<Vec<(Bytes, Bytes)>> {
        let (start, end) = (start.clone(), end.clone());
        self.run(move |pool, _| async move {
            let client = connection(&pool).await?;
            let mut sql = String::from("SELECT key, value FROM journeyc_kv WHERE true");
            let mut params: Vec<Vec<u8>> = Vec::new();
            for (bound, included, excluded) in [(&start, ">=", ">"), (&end, "<=", "<")] {
                let (op, key) = match bound {
                    Bound::Included(key) => (included, key),
                    Bound::Excluded(key) => (excluded, key),
                    Bound::Unbounded => continue,
                };
                params.push(key.clone());
                sql.push_str(&format!(" AND key {op} ${}", params.len()));
            }
            if partitions.is_some() {
                sql.push_str(&format!(" AND partition = ANY(${})", params.len() + 1));
            }
            let order = if descending { "DESC" } else { "ASC" };
            sql.push_str(&format!(" ORDER BY key {order} LIMIT {SCAN_PAGE}"));
            let statement = client.prepare_cached(&sql).await.map_err(|e| error("scan", e))?;
            let mut refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            if let Some(partitions) = &partitions {
                refs.push(partitions);
            }
            let rows = client.query(&statement, &refs).await.map_err(|e| error("scan", e))?;
            Ok(rows
                .into_iter()
                .map(|row| {
                    (
                        Bytes::from(row.get::<_, Vec<u8>>(0)),
                        Bytes::from(row.get::<_, Vec<u8>>(1)),
                    )
                })
                .collect())
        })
    }
}

/// The channel of the inbox's notifications.
pub const CHANNEL_INBOX: &str = "journeyc_inbox";
/// The channel of the commands standbys hand to the owner
/// (`daemon/command.rs`).
pub const CHANNEL_COMMANDS: &str = "journeyc_commands";
/// The channel on which the owner says the store's current version
/// (`mcurrent`) changed; standbys follow it (`daemon/reload.rs`).
pub const CHANNEL_VERSION: &str = "journeyc_version";

/// `LISTEN`s on `channel` and wakes `notify` at each notification,
/// until the connection ends.
async fn listen(
    config: tokio_postgres::Config,
    channel: &'static str,
    notify: Arc<tokio::sync::Notify>,
) -> StoreResult<()> {
    let (client, mut connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| error("cannot connect to PostgreSQL", e))?;
    // The connection's messages (notifications among them) arrive only
    // while it is polled; the client's LISTEN needs it polled too.
    let (sender, mut messages) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(message)) => {
                    if sender.send(message).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, channel, "a listening connection failed");
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .map_err(|e| error("listen", e))?;
    while let Some(message) = messages.recv().await {
        if Arc::strong_count(&notify) == 1 {
            // Nobody waits any more (the round that listened has ended).
            return Ok(());
        }
        if let tokio_postgres::AsyncMessage::Notification(_) = message {
            notify.notify_one();
        }
    }
    drop(client);
    Err(StoreError::Postgres(format!(
        "the listening connection of {channel} closed"
    )))
}

/// Writes `batch` in `tx`, each row in its key's partition: its removals
/// in one statement, then its values in one (one round trip each, whatever
/// the number of rows).
async fn write_rows(tx: &deadpool_postgres::Transaction<'_>, batch: &Batch, partitions: i32) -> StoreResult<()> {
    let (mut put_partitions, mut put_keys, mut put_values) = (Vec::new(), Vec::new(), Vec::new());
    let (mut del_partitions, mut del_keys) = (Vec::new(), Vec::new());
    for (key, value) in batch.writes() {
        let partition = partition_of(key, partitions);
        match value {
            Some(value) => {
                put_partitions.push(partition);
                put_keys.push(key.as_ref());
                put_values.push(value.as_ref());
            }
            None => {
                del_partitions.push(partition);
                del_keys.push(key.as_ref());
            }
        }
    }
    if !del_keys.is_empty() {
        let statement = tx
            .prepare_cached(
                "DELETE FROM journeyc_kv WHERE (partition, key) IN \
                 (SELECT * FROM unnest($1::integer[], $2::bytea[]))",
            )
            .await
            .map_err(|e| error("delete", e))?;
        tx.execute(&statement, &[&del_partitions, &del_keys])
            .await
            .map_err(|e| error("delete", e))?;
    }
    if !put_keys.is_empty() {
        let statement = tx
            .prepare_cached(
                "INSERT INTO journeyc_kv (partition, key, value) \
                 SELECT * FROM unnest($1::integer[], $2::bytea[], $3::bytea[]) \
                 ON CONFLICT (partition, key) DO UPDATE SET value = EXCLUDED.value",
            )
            .await
            .map_err(|e| error("write", e))?;
        tx.execute(&statement, &[&put_partitions, &put_keys, &put_values])
            .await
            .map_err(|e| error("write", e))?;
    }
    Ok(())
}

/// Waits on the calling thread for `work`, run on the backend's runtime.
fn block<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> StoreResult<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv()
        .map_err(|_| StoreError::Postgres("the PostgreSQL runtime stopped".into()))
}

async fn connection(pool: &deadpool_postgres::Pool) -> StoreResult<deadpool_postgres::Object> {
    pool.get().await.map_err(|e| error("cannot connect to PostgreSQL", e))
}

/// SQL for the `timestamptz` `column` as UTC RFC 3339 text to the second
/// (`2026-12-08T03:12:00Z`; NULL stays NULL), as the redactor answers
/// show times.
fn utc_text(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
}

/// The message of a lost lease: who holds `partition` now.
fn lost(lease: &Lease, partition: i32, epoch: i64, holder: Option<(String, i64)>) -> String {
    let now = match holder {
        Some((owner, epoch)) => format!("now owned by {owner} at epoch {epoch}"),
        None => "now owned by no node".to_string(),
    };
    if partition == LEASE_STORE {
        format!(
            "lease lost: partition {LEASE_STORE} (the whole store) {now}; this node ({}) held epoch {epoch} and \
             commits nothing more",
            lease.node
        )
    } else {
        format!(
            "lease lost: partition {partition} {now}; this node ({}) held epoch {epoch} and commits nothing more \
             to it",
            lease.node
        )
    }
}

/// Takes the store's lease if no node holds it or its holder's has
/// expired: answers the new epoch, or `None` while another node holds it.
async fn acquire(client: &deadpool_postgres::Object, lease: &Lease) -> StoreResult<Option<i64>> {
    let row = client
        .query_opt(
            "INSERT INTO journeyc_leases (partition, owner, epoch, expires_at) \
             VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond') \
             ON CONFLICT (partition) DO UPDATE \
             SET owner = EXCLUDED.owner, epoch = journeyc_leases.epoch + 1, expires_at = EXCLUDED.expires_at \
             WHERE journeyc_leases.expires_at < now() \
             RETURNING epoch",
            &[&LEASE_STORE, &lease.node, &lease.millis()],
        )
        .await
        .map_err(|e| error("take the lease", e))?;
    Ok(row.map(|row| row.get(0)))
}

/// Beats this node's heart in `journeyc_nodes` (its row valid for the
/// lease's duration; rows dead for a minute are removed) and answers how
/// many nodes are alive, this one included.
async fn heartbeat(client: &deadpool_postgres::Object, lease: &Lease) -> StoreResult<usize> {
    if !lease.spread {
        return Ok(1);
    }
    let row = client
        .query_one(
            "WITH beat AS ( \
                 INSERT INTO journeyc_nodes (node, expires_at) \
                 VALUES ($1, now() + $2::bigint * interval '1 millisecond') \
                 ON CONFLICT (node) DO UPDATE SET expires_at = EXCLUDED.expires_at RETURNING node), \
             gone AS (DELETE FROM journeyc_nodes WHERE expires_at < now() - interval '1 minute' AND node <> $1) \
             SELECT count(*) FROM journeyc_nodes WHERE expires_at >= now() AND node <> $1",
            &[&lease.node, &lease.millis()],
        )
        .await
        .map_err(|e| error("the node's heartbeat", e))?;
    Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0) + 1)
}

/// The partitions one of `live` nodes holds at most: ceil(P / live).
pub fn fair_share(partitions: i32, live: usize) -> usize {
    let partitions = usize::try_from(partitions.max(0)).unwrap_or(0);
    partitions.div_ceil(live.max(1))
}

/// Moves this node's holding towards its share: with `--spread` the fair
/// share among `live` nodes, otherwise every partition while it holds the
/// store's lease and none without. Below it, claims free or expired
/// partitions; above it (a node joined), gives the surplus up, the
/// highest-numbered first.
async fn balance(client: &deadpool_postgres::Object, lease: &Lease, live: usize, store: bool) -> StoreResult<()> {
    let share = match (lease.spread, store) {
        (true, _) => fair_share(lease.count, live),
        (false, true) => usize::try_from(lease.count).unwrap_or(0),
        (false, false) => 0,
    };
    let held = lease.partitions.borrow().clone();
    if held.len() < share {
        claim(client, lease, share - held.len()).await
    } else if held.len() > share {
        let surplus: Owned = held
            .iter()
            .rev()
            .take(held.len() - share)
            .map(|(p, e)| (*p, *e))
            .collect();
        give_up(client, lease, &surplus).await
    } else {
        Ok(())
    }
}

/// Claims up to `wanted` partition leases (0..P) that no node holds or
/// whose holder's has expired, lowest first, each at its next epoch, and
/// adds them to the held set. Rows held and unexpired are not touched (nor
/// locked), so in the steady state this writes nothing. Two nodes claiming
/// at once never both get a partition: the second one's update finds the
/// row unexpired once the first one's commits.
async fn claim(client: &deadpool_postgres::Object, lease: &Lease, wanted: usize) -> StoreResult<()> {
    let rows = client
        .query(
            "INSERT INTO journeyc_leases (partition, owner, epoch, expires_at) \
             SELECT p, $1, 1, now() + $2::bigint * interval '1 millisecond' \
             FROM generate_series(0, $3::integer - 1) AS p \
             WHERE NOT EXISTS (SELECT 1 FROM journeyc_leases AS l WHERE l.partition = p AND l.expires_at >= now()) \
             ORDER BY p LIMIT $4 \
             ON CONFLICT (partition) DO UPDATE \
             SET owner = EXCLUDED.owner, epoch = journeyc_leases.epoch + 1, expires_at = EXCLUDED.expires_at \
             WHERE journeyc_leases.expires_at < now() \
             RETURNING partition, epoch",
            &[&lease.node, &lease.millis(), &lease.count, &(wanted as i64)],
        )
        .await
        .map_err(|e| error("claim partitions", e))?;
    if rows.is_empty() {
        return Ok(());
    }
    let claimed: Vec<(i32, i64)> = rows.into_iter().map(|row| (row.get(0), row.get(1))).collect();
    tracing::info!(node = %lease.node, partitions = claimed.len(), "claimed partition leases");
    // The outbox numbers drawn so far may be below some the partitions'
    // previous owner wrote: they are dropped before the partitions are
    // held (`Pg::outbox_seq`).
    lease.claims.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    lease.partitions.send_modify(|owned| owned.extend(claimed));
    Ok(())
}

/// Gives `partitions` up: out of the held set first (no write of this
/// node starts on them after it), then their rows expired, so the next
/// claim of another node takes them at once. A write already past its
/// check still commits before the takeover: the takeover's update waits
/// for its share lock on the row, which still names this node at its
/// epoch.
async fn give_up(client: &deadpool_postgres::Object, lease: &Lease, partitions: &Owned) -> StoreResult<()> {
    lease
        .partitions
        .send_modify(|owned| owned.retain(|p, _| !partitions.contains_key(p)));
    let (numbers, epochs): (Vec<i32>, Vec<i64>) = partitions.iter().map(|(p, e)| (*p, *e)).unzip();
    client
        .execute(
            "WITH mine AS MATERIALIZED ( \
                 SELECT partition FROM journeyc_leases \
                 WHERE owner = $1 AND (partition, epoch) IN (SELECT * FROM unnest($2::integer[], $3::bigint[])) \
                 ORDER BY partition FOR UPDATE) \
             UPDATE journeyc_leases AS l SET expires_at = now() - interval '1 millisecond' \
             FROM mine WHERE l.partition = mine.partition",
            &[&lease.node, &numbers, &epochs],
        )
        .await
        .map_err(|e| error("give partitions up", e))?;
    tracing::info!(node = %lease.node, partitions = partitions.len(), "gave partition leases up to other nodes");
    Ok(())
}

/// Renews the store's lease (at `epoch`, when this node holds it) and every
/// partition lease held, in one statement that locks the rows in partition
/// order (as the writes' check does, so neither waits on the other in a
/// cycle). Answers the partitions renewed; one held and not among them was
/// taken over.
async fn renew(client: &deadpool_postgres::Object, lease: &Lease, epoch: Option<i64>) -> StoreResult<BTreeSet<i32>> {
    let held = lease.partitions.borrow().clone();
    let (mut partitions, mut epochs) = (Vec::new(), Vec::new());
    if let Some(epoch) = epoch {
        partitions.push(LEASE_STORE);
        epochs.push(epoch);
    }
    partitions.extend(held.keys());
    epochs.extend(held.values());
    if partitions.is_empty() {
        return Ok(BTreeSet::new());
    }
    let rows = client
        .query(
            "WITH mine AS MATERIALIZED ( \
                 SELECT partition FROM journeyc_leases \
                 WHERE owner = $1 AND (partition, epoch) IN (SELECT * FROM unnest($2::integer[], $3::bigint[])) \
                 ORDER BY partition FOR UPDATE) \
             UPDATE journeyc_leases AS l SET expires_at = now() + $4::bigint * interval '1 millisecond' \
             FROM mine WHERE l.partition = mine.partition RETURNING l.partition",
            &[&lease.node, &partitions, &epochs, &lease.millis()],
        )
        .await
        .map_err(|e| error("renew the leases", e))?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Who holds `partition`'s lease now, as far as one read can tell.
async fn holder(client: &deadpool_postgres::Object, partition: i32) -> Option<(String, i64)> {
    client
        .query_opt(
            "SELECT owner, epoch FROM journeyc_leases WHERE partition = $1",
            &[&partition],
        )
        .await
        .ok()
        .flatten()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
}

/// Every tick until the store's lease is lost: beats the node's heart,
/// renews the leases held, tries for the store's lease when another node's
/// has expired, and moves the partitions held towards the fair share
/// ([`balance`]). A renewal that finds another owner of the store's lease
/// loses it; a partition taken over is dropped from the held set (the
/// writes' check refuses it from then on, and the node goes on with the
/// others). A tick that fails (the database unreachable) is tried again at
/// the next, the writes' own check keeping the fence meanwhile.
async fn keep_lease(client: deadpool_postgres::Object, lease: Arc<Lease>) {
    let tick = LEASE_TICK.min(lease.duration / 3);
    loop {
        tokio::time::sleep(tick).await;
        let store_epoch = match lease.state.borrow().clone() {
            LeaseState::Lost(_) => return,
            LeaseState::Held(epoch) => Some(epoch),
            LeaseState::Standby => None,
        };
        let live = match heartbeat(&client, &lease).await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "the node's heartbeat failed");
                continue;
            }
        };
        let held = lease.partitions.borrow().clone();
        match renew(&client, &lease, store_epoch).await {
            Ok(renewed) => {
                if let Some(epoch) = store_epoch.filter(|_| !renewed.contains(&LEASE_STORE)) {
                    let reason = lost(&lease, LEASE_STORE, epoch, holder(&client, LEASE_STORE).await);
                    tracing::error!(%reason, "the store's lease was taken over");
                    lease.lose(&reason);
                    return;
                }
                for (partition, epoch) in held.into_iter().filter(|(p, _)| !renewed.contains(p)) {
                    let reason = lost(&lease, partition, epoch, holder(&client, partition).await);
                    tracing::error!(%reason, "a partition's lease was taken over");
                    lease.drop_partition(partition, epoch);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the leases failed");
                continue;
            }
        }
        let mut taken = None;
        if store_epoch.is_none() {
            match acquire(&client, &lease).await {
                Ok(Some(epoch)) => {
                    tracing::info!(node = %lease.node, epoch, "took the store's lease");
                    taken = Some(epoch);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "trying for the store's lease failed"),
            }
        }
        // A node that took the store's lease claims its partitions before
        // it says so: its owner's round starts on them.
        if let Err(e) = balance(&client, &lease, live, store_epoch.or(taken).is_some()).await {
            tracing::warn!(error = %e, "balancing the partitions failed");
        }
        if let Some(epoch) = taken {
            lease.state.send_replace(LeaseState::Held(epoch));
        }
    }
}

/// Gives the held leases up: no write of this node after it, and their
/// rows expired so that another node takes over at its next try; the
/// node's heartbeat row goes too, so the others' fair share grows at once.
async fn release(pool: &deadpool_postgres::Pool, lease: &Lease) -> StoreResult<()> {
    let reason = match lease.state.borrow().clone() {
        LeaseState::Lost(_) => return Ok(()),
        LeaseState::Held(epoch) => format!(
            "lease released: this node ({}) gave up epoch {epoch} at its stop",
            lease.node
        ),
        LeaseState::Standby => format!(
            "lease released: this node ({}) gave its partitions up at its stop",
            lease.node
        ),
    };
    lease.lose(&reason);
    let client = connection(pool).await?;
    client
        .execute(
            "WITH mine AS MATERIALIZED ( \
                 SELECT partition FROM journeyc_leases WHERE owner = $1 ORDER BY partition FOR UPDATE), \
             gone AS (DELETE FROM journeyc_nodes WHERE node = $1) \
             UPDATE journeyc_leases AS l SET expires_at = now() - interval '1 millisecond' \
             FROM mine WHERE l.partition = mine.partition",
            &[&lease.node],
        )
        .await
        .map_err(|e| error("release the leases", e))?;
    Ok(())
}

/// Migrates and settles the partition count; answers it and this node's
/// unique name.
async fn start(pool: &deadpool_postgres::Pool) -> StoreResult<(i32, String)> {
    let mut client = connection(pool).await?;
    let tx = client.transaction().await.map_err(|e| error("begin", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
        .await
        .map_err(|e| error("lock", e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS journeyc_migrations \
         (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(|e| error("migrations", e))?;
    let applied: BTreeSet<i32> = tx
        .query("SELECT version FROM journeyc_migrations", &[])
        .await
        .map_err(|e| error("migrations", e))?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    let newest = MIGRATIONS.last().map(|(version, _)| *version).unwrap_or(0);
    if let Some(unknown) = applied.iter().find(|version| **version > newest) {
        return Err(StoreError::Postgres(format!(
            "this database was migrated by a newer journeyc (schema version {unknown}; this build knows up to \
             {newest})"
        )));
    }
    // Every step not recorded, in order (not only those above the
    // highest: a step may be numbered below one released before it).
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| !applied.contains(version)) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| error(&format!("migration {version}"), e))?;
        tx.execute("INSERT INTO journeyc_migrations (version) VALUES ($1)", &[version])
            .await
            .map_err(|e| error("migrations", e))?;
    }
    tx.execute(
        "INSERT INTO journeyc_settings (name, value) VALUES ('partitions', $1) ON CONFLICT (name) DO NOTHING",
        &[&i64::from(PARTITIONS_DEFAULT)],
    )
    .await
    .map_err(|e| error("settings", e))?;
    let partitions: i64 = tx
        .query_one("SELECT value FROM journeyc_settings WHERE name = 'partitions'", &[])
        .await
        .map_err(|e| error("settings", e))?
        .get(0);
    let id: i64 = tx
        .query_one("SELECT nextval('journeyc_ids')", &[])
        .await
        .map_err(|e| error("generate an id", e))?
        .get(0);
    tx.commit().await.map_err(|e| error("commit", e))?;
    let partitions = i32::try_from(partitions)
        .ok()
        .filter(|p| (1..=PARTITIONS_MAX).contains(p))
        .ok_or_else(|| {
            StoreError::Postgres(format!(
                "journeyc_settings: {partitions} partitions (1 to {PARTITIONS_MAX})"
            ))
        })?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = match host.trim() {
        "" => "localhost",
        host => host,
    };
    Ok((partitions, format!("journeyc-{}@{host}#{id}", std::process::id())))
}

/// A scan of [`Pg::scan`]: pages from the front ascend, pages from the back
/// descend, and neither passes a key the other end already returned.
pub struct Scan {
    pg: Pg,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    /// Only the partitions this node holds ([`Pg::scan_owned`]).
    owned_only: bool,
    front: VecDeque<(Bytes, Bytes)>,
    back: VecDeque<(Bytes, Bytes)>,
    done: bool,
}

impl Scan {
    fn take(&mut self, from_back: bool) -> Option<StoreResult<(Bytes, Bytes)>> {
        if self.done {
            return None;
        }
        let buffer = if from_back { &mut self.back } else { &mut self.front };
        if buffer.is_empty() {
            let partitions = self.owned_only.then(|| self.pg.writable());
            match self.pg.page(&self.start, &self.end, from_back, partitions) {
                Ok(page) => {
                    let buffer = if from_back { &mut self.back } else { &mut self.front };
                    buffer.extend(page);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let buffer = if from_back { &mut self.back } else { &mut self.front };
        let Some((key, value)) = buffer.pop_front() else {
            self.done = true;
            return None;
        };
        // Keys already returned by the other end are past its bound.
        let inside = match (from_back, &self.start, &self.end) {
            (true, Bound::Included(start), _) => key[..] >= start[..],
            (true, Bound::Excluded(start), _) => key[..] > start[..],
            (false, _, Bound::Included(end)) => key[..] <= end[..],
            (false, _, Bound::Excluded(end)) => key[..] < end[..],
            _ => true,
        };
        if !inside {
            self.done = true;
            return None;
        }
        if from_back {
            self.end = Bound::Excluded(key.to_vec());
        } else {
            self.start = Bound::Excluded(key.to_vec());
        }
        Some(Ok((key, value)))
    }
}

impl Iterator for Scan {
    type Item = StoreResult<(Bytes, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.take(false)
    }
}

impl DoubleEndedIterator for Scan {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.take(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_records_of_one_customer_share_its_partition() {
        let p = |key: &[u8]| partition_of(key, 256);
        let customer = p(b"calice");
        assert!((0..256).contains(&customer));
        for key in [
            &b"falice"[..],
            b"xalice",
            b"aalice\0welcome",
            b"Lalice\0bob",
            b"Galice\0g1",
            b"Ralice\0\0\0\x01",
        ] {
            assert_eq!(p(key), customer, "{}", String::from_utf8_lossy(key));
        }
        for key in [
            &b"t\0\0\0\x01"[..],
            b"o\0\0\0\x05",
            b"mseq",
            b"sg/timers",
            b"kjsonl:x",
            b"B\0\0\0\x01",
        ] {
            assert_eq!(p(key), PARTITION_NONE);
        }
        let spread: std::collections::HashSet<i32> = (0..1000).map(|i| p(format!("cuser-{i}").as_bytes())).collect();
        assert!(
            spread.len() > 200,
            "1000 customers over {} of 256 partitions",
            spread.len()
        );
        assert_eq!(partition_of(b"calice", 1), 0);
    }

    #[test]
    fn a_drawn_timer_chunk_is_stored_in_its_partition_a_counted_one_at_none() {
        let key = |chunk: u64| [&b"t"[..], &7u64.to_be_bytes(), &chunk.to_be_bytes()].concat();
        let drawn = partitioned_chunk(41, 200);
        assert_eq!(chunk_partition(drawn), Some(200));
        assert_eq!(partition_of(&key(drawn), 256), 200);
        assert_eq!(partition_of(&key(partitioned_chunk(0, 0)), 256), 0);
        assert_eq!(partition_of(&key(partitioned_chunk(1 << 40, 255)), 256), 255);
        assert_ne!(partitioned_chunk(1, 3), partitioned_chunk(2, 3));
        // Counted by `mtimerchunk` (before per-partition chunks): no partition.
        assert_eq!(chunk_partition(41), None);
        assert_eq!(partition_of(&key(41), 256), PARTITION_NONE);
        // A partition past P (a database with fewer) is none of them.
        assert_eq!(partition_of(&key(partitioned_chunk(3, 300)), 256), PARTITION_NONE);
    }

    /// Inbox records, commands and answers numbered for a partition are
    /// stored in it; those with a plain id (the old layout, and the
    /// commands about the whole store) at none.
    #[test]
    fn a_numbered_inbox_record_command_or_answer_is_stored_in_its_partition() {
        let key = |prefix: u8, number: u64| [&[prefix][..], &number.to_be_bytes()].concat();
        for prefix in [b'i', b'q', b'Q'] {
            assert_eq!(partition_of(&key(prefix, partitioned_chunk(7, 200)), 256), 200);
            assert_eq!(partition_of(&key(prefix, partitioned_chunk(1 << 46, 0)), 256), 0);
            assert_eq!(partition_of(&key(prefix, 7), 256), PARTITION_NONE);
            assert_eq!(partition_of(&key(prefix, u64::MAX >> 1), 256), PARTITION_NONE);
            assert_eq!(
                partition_of(&key(prefix, partitioned_chunk(7, 300)), 256),
                PARTITION_NONE
            );
            // Another length is no such record.
            assert_eq!(
                partition_of(&[key(prefix, partitioned_chunk(7, 3)), vec![0]].concat(), 256),
                PARTITION_NONE
            );
        }
        // Other prefixes with such a number name no partition by it (an
        // outbox chunk's does: the test below).
        assert_eq!(partition_of(&key(b'r', partitioned_chunk(7, 3)), 256), PARTITION_NONE);
    }

    #[test]
    fn outbox_chunks_cursors_dead_letters_and_retries_are_stored_in_the_partition_their_number_names() {
        let p = |key: &[u8]| partition_of(key, 256);
        let seq = partitioned_chunk(77, 201);
        assert_eq!(seq_partition(seq), Some(201));
        assert_eq!(p(&[&b"o"[..], &seq.to_be_bytes()].concat()), 201);
        for prefix in [&b"d"[..], b"w"] {
            let key = [prefix, b"webhook:http://x", &[0], &seq.to_be_bytes()].concat();
            assert_eq!(p(&key), 201, "{}", String::from_utf8_lossy(prefix));
        }
        let cursor = [&b"kjsonl:/data/sends.jsonl"[..], &[0], &201u16.to_be_bytes()].concat();
        assert_eq!(p(&cursor), 201);
        // Written before the outbox was kept per partition (and on sled):
        // numbers counted by `mseq`, one cursor per sink, all at -1.
        for key in [
            [&b"o"[..], &41u64.to_be_bytes()].concat(),
            [&b"dwebhook:http://x"[..], &[0], &41u64.to_be_bytes()].concat(),
            [&b"wwebhook:http://x"[..], &[0], &41u64.to_be_bytes()].concat(),
            b"kjsonl:/data/sends.jsonl".to_vec(),
            b"mseq".to_vec(),
        ] {
            assert_eq!(p(&key), PARTITION_NONE, "{}", String::from_utf8_lossy(&key));
        }
        // A number of a partition past P names none of this database's.
        assert_eq!(
            p(&[&b"o"[..], &partitioned_chunk(1, 300).to_be_bytes()].concat()),
            PARTITION_NONE
        );
        // Numbers of one partition ascend with their draw; their keys too.
        assert!(partitioned_chunk(78, 0) > partitioned_chunk(77, 255));
    }
}
