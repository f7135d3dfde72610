//! The durable store: one sled tree, records told apart by a one-byte key prefix.
//!
//! One tree because a [`sled::Batch`] is atomic only within a tree: a customer's
//! new state, its timer index entry, its outbox entries and the stats counters
//! it changed are written by one batch, so after a crash either all of them are
//! there or none.
//!
//! | prefix | key after the prefix                 | value                                 |
//! |--------|--------------------------------------|---------------------------------------|
//! | `c`    | customer id                          | postcard [`CustomerState`] with names as ids of the dictionary (`n`), then the number of its timer chunk (u64 BE) when it has one |
//! | `n`    | name id (u32 BE)                     | the name (UTF-8): the store's dictionary of the journeys, events, segments and messages customer records name ([`crate::runtime::names`]); ids never reused, each written in the batch of the first record that uses it (on PostgreSQL at partition -1) |
//! | `t`    | due ms (order-preserving u64 BE) + chunk number (u64 BE) | postcard `Vec<String>`: customers due then, at most [`TIMER_CHUNK_MAX`] (the timer index). On PostgreSQL a chunk lists customers of one partition and is stored in it: its number is drawn from the sequence `journeyc_timer_chunks`, top bit set, the partition in the low 16 bits (`kv/pg.rs`, [`TimerChanges::on`]) |
//! | `t`    | due ms + customer id (written before chunks; still read)       | empty: one customer     |
//! | `o`    | first outbox sequence number of the chunk (u64 BE) | postcard `Vec<(seq, JSON line)>`: one chunk per group commit, numbered from `mseq`. On PostgreSQL one chunk per partition the group touched, stored in it: each number is drawn from the sequence `journeyc_outbox_seq`, top bit set, the partition in the low 16 bits (`Pg::outbox_seq`); chunks numbered from `mseq` (a store written before) stay at -1 |
//! | `k`    | sink name                            | last sequence number delivered (u64 BE): sled's one cursor; on PostgreSQL that of the records at -1 |
//! | `k`    | sink name + `0x00` + partition (u16 BE) | PostgreSQL: last sequence number delivered of that partition's records, stored in it ([`Cursors`]) |
//! | `d`    | sink name + `0x00` + sequence (u64 BE) | dead letter: JSON with the error (on PostgreSQL in the partition its number names) |
//! | `s`    | counter name (`j/JOURNEY/…`, `g/…`)  | i64 BE                                |
//! | `a`    | customer id + `0x00` + journey       | JSON `runtime::stats::Groups` of the latest enrollment (holdout group, split arms, converted), for stats |
//! | `b`    | bundle key (hex SHA-256 of its postcard bytes) | postcard [`Bundle`]         |
//! | `r`, `R` | refusal id; customer + `0x00` + refusal id | the rejected store (`daemon/rejected.rs`) |
//! | `l`    | an id merged into another customer (an alias) | the customer id it resolves to (UTF-8) |
//! | `L`    | customer id + `0x00` + alias         | empty: the aliases of a customer (bounds, erasure) |
//! | `G`    | customer id + `0x00` + group id      | JSON `{id, traits, at}`: a group the customer is in (`group` calls) |
//! | `w`    | sink name + `0x00` + sequence (u64 BE) | a send waiting for a retry (`retry.rs`; on PostgreSQL in the partition its number names) |
//! | `m`    | `seq` / `current` / `timerchunk` / `format` | next outbox sequence / current bundle key / next timer chunk number (`seq` and `timerchunk` on sled; PostgreSQL draws them from sequences) / store format |
//! | `i`    | number (u64 BE): `2^63 \| id << 16 \| partition`, `id` from `journeyc_ids`, one per request; before the inbox was per partition a plain id (partition -1, still read) | JSON calls of one partition's customers acked by a standby, stored in that partition, removed by the owner's commit of them (PostgreSQL only, `daemon/inbox.rs`) |
//! | `q`, `Q` | number (u64 BE): numbered as `i` for a command naming a customer (its partition); a plain id for one about the whole store (partition -1) | a write a standby hands to the owner (`DELETE`, a customer's retry, a reload's install, …) as JSON, and the owner's answer to it at the same number (PostgreSQL only, `daemon/command.rs`) |
//!
//! The timer index keeps many customers under one key, so firing a burst of
//! wake-ups deletes one key per chunk rather than one per customer (sled's
//! cost is per key). Each customer record names its chunk, so a customer whose
//! wake-up moves is taken out of its chunk exactly.
//!
//! **Invariant:** a customer record `c/ID` whose state has a `next_wake()` of
//! `Some(at)` names a chunk `t/at/N` that lists `ID` (or, if it names none, a
//! key `t/at/ID` exists), and no other timer entry lists that customer. Chunks
//! only shrink after they are written: new entries always go into new chunks.
//! Only the commit thread writes `c`, `n`, `t`, `o`, `s`, `a`, `l`, `L`, `G`, `m`; sinks write
//! `k`, `d` and delete delivered `o` entries; the HTTP handlers write `r` and `R` (refused calls).

use crate::compile::bytecode::Bundle;
use crate::daemon::kv::Bytes;
use crate::runtime::names::Dictionary;
use crate::runtime::names::{Name, NameMap};
use crate::runtime::{CustomerState, Millis};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

pub const PREFIX_CUSTOMER: u8 = b'c';
pub const PREFIX_TIMER: u8 = b't';
pub const PREFIX_OUTBOX: u8 = b'o';
pub const PREFIX_CURSOR: u8 = b'k';
pub const PREFIX_DEAD: u8 = b'd';
/// Sends waiting for a retry, per sink (`retry.rs`).
pub const PREFIX_RETRY: u8 = b'w';
pub const PREFIX_STAT: u8 = b's';
pub const PREFIX_ARM: u8 = b'a';
pub const PREFIX_BUNDLE: u8 = b'b';
pub const PREFIX_META: u8 = b'm';
pub const PREFIX_ALIAS: u8 = b'l';
pub const PREFIX_ALIASES_OF: u8 = b'L';
pub const PREFIX_GROUP: u8 = b'G';
/// The store's dictionary of names: id (u32 BE) → name.
pub const PREFIX_NAME: u8 = b'n';
/// The most groups kept per customer: beyond, the one updated longest ago
/// is dropped.
pub const GROUPS_MAX: usize = 20;

pub const META_SEQ: &[u8] = b"mseq";
pub const META_CURRENT: &[u8] = b"mcurrent";
/// The next timer chunk number (u64 BE).
pub const META_TIMER_CHUNK: &[u8] = b"mtimerchunk";
/// The store format (u64 BE), written by the daemon when it starts.
pub const META_FORMAT: &[u8] = b"mformat";
/// On PostgreSQL: present (empty) between the removal of erasure marks and
/// the end of the `VACUUM FULL` that drops their rows, so a crash in between
/// vacuums again at the next start. Names no customer.
pub const META_VACUUM_PENDING: &[u8] = b"mvacuum";

/// The store format this build writes: 2 has timer chunks named by customer
/// records; 3 adds subscriptions and remembered sends to the customer
/// state; 4 adds to each remembered send its version, step, split arm and
/// the engagements seen for it; 5 adds the ended enrollments whose goal
/// windows are still open; 6 adds the profile's incarnation
/// ([`CustomerState::incarnation`]); 7 writes the names customer records
/// are keyed by (journeys, events, segments, messages) as ids of the
/// store's dictionary (`n` records) instead of their text. A store without
/// the mark (format 1: one timer key per customer) or marked 2 to 6 has its
/// customer records rewritten when it is opened ([`Store::open`]); a store
/// marked newer is refused, since this build could misread it.
pub const STORE_FORMAT: u64 = 7;

/// The most customers in one timer chunk (bounds the rewrite when one of
/// them moves).
pub const TIMER_CHUNK_MAX: usize = 512;

/// Counter: customers waiting on a timer.
pub const STAT_TIMERS: &str = "g/timers";
/// Store counter: customers erased so far (while non-zero, new profiles
/// get an incarnation; see [`CustomerState::incarnation`]).
pub const STAT_ERASURES: &str = "g/erasures";

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// A batch touched a partition whose lease this node does not hold (any
    /// more): nothing of it was written; batches of other partitions may
    /// still commit (`kv/pg.rs`).
    #[error("PostgreSQL: {reason}")]
    PartitionNotOwned { partition: i32, reason: String },
    #[error("corrupt record under key {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(
        "this data directory was written by a newer journeyc (store format {found}; this build reads formats up \
         to {STORE_FORMAT}): run that version, or export the data with it and import it here"
    )]
    NewerFormat { found: u64 },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Settings of the sled database.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub cache_bytes: u64,
    /// `--store postgres://…`: the records in PostgreSQL instead of sled
    /// under the data directory (`daemon/kv/pg.rs`).
    pub postgres: Option<String>,
    /// `--lease-seconds`: how long the PostgreSQL store's lease lasts
    /// unrenewed before a standby takes over (`kv/pg.rs`).
    pub lease: std::time::Duration,
    /// `--spread`: on PostgreSQL, this node applies a fair share of the
    /// partitions; without it, it applies all of them while it holds the
    /// store's lease and stands by otherwise (`kv/pg.rs`).
    pub spread: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        // sled's page cache; the default (1 GiB) is far above what a small
        // daemon should hold, and RSS is one of our budgets. 32 MiB keeps
        // 1M waiting enrollments well under 300 MB, and firing timers costs
        // less CPU than with 16 (docs/performance.md, "Daemon").
        StoreOptions {
            cache_bytes: 32 * 1024 * 1024,
            postgres: None,
            lease: LEASE_DEFAULT,
            spread: false,
        }
    }
}

/// The PostgreSQL store's lease unless `--lease-seconds` says otherwise.
pub const LEASE_DEFAULT: std::time::Duration = std::time::Duration::from_secs(10);

/// The sled database with typed accessors. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub db: crate::daemon::kv::Kv,
    /// The names customer records use, by id (the `n` records); clones
    /// share it.
    pub names: Arc<Dictionary>,
}

impl Store {
    /// Opens the store: sled under `dir`, or the PostgreSQL database of
    /// `options.postgres` once this process holds its lease (waiting at
    /// most for the lease to expire, then refused).
    pub fn open(dir: &Path, options: &StoreOptions) -> StoreResult<Store> {
        let db = crate::daemon::kv::Kv::open(dir, options)?;
        if let crate::daemon::kv::Kv::Postgres(pg) = &db {
            pg.wait_for_lease(options.lease + std::time::Duration::from_secs(2))?;
        }
        Store::on(db)
    }

    /// The store on an open backend (on PostgreSQL, one whose lease this
    /// process holds): a store of an older format is upgraded here.
    pub fn on(db: crate::daemon::kv::Kv) -> StoreResult<Store> {
        let found = db.get(META_FORMAT)?.map(|v| decode_u64(&v));
        if let Some(found) = found.filter(|found| *found > STORE_FORMAT) {
            return Err(StoreError::NewerFormat { found });
        }
        let store = Store::reading(db)?;
        if found.is_some_and(|found| found < 6) || found.is_none() && store.db.iter().next().is_some() {
            // Formats before 6 did not count erasures: assume there were
            // some, so no profile made from now on repeats an erased one's
            // send ids.
            let erasures = store.counter(STAT_ERASURES)?;
            if erasures < 1 {
                let base = store.counter_in(STAT_ERASURES, PARTITION_NONE)? + 1 - erasures;
                store.db.insert(stat_key(STAT_ERASURES), &base.to_be_bytes())?;
            }
        }
        match found {
            None | Some(..=2) => store.upgrade_customers::<StateV2>()?,
            Some(3) => store.upgrade_customers::<StateV3>()?,
            Some(4) => store.upgrade_customers::<StateV4>()?,
            Some(5) => store.upgrade_customers::<StateV5>()?,
            // Format 6 is today's state with names as text: read as such.
            Some(6) => store.upgrade_customers::<CustomerState>()?,
            Some(_) => {}
        }
        if let crate::daemon::kv::Kv::Postgres(pg) = &store.db {
            store.partition_timer_chunks(pg)?;
        }
        Ok(store)
    }

    /// The store on an open backend as it is, its dictionary read (no
    /// format check, no upgrade: a standby's reads).
    pub fn reading(db: crate::daemon::kv::Kv) -> StoreResult<Store> {
        let names = Arc::new(Dictionary::with(read_names(&db)?));
        Ok(Store { db, names })
    }

    /// Writes the dictionary's records of every name `bundle` has that the
    /// store lacks, in one batch: on PostgreSQL the store's owner does it
    /// for the version it runs or installs before any other node runs it,
    /// so a `--spread` node (which cannot write what names no customer)
    /// finds every name it encodes with an id already. Answers how many
    /// were new.
    pub fn register_names(&self, bundle: &Bundle) -> StoreResult<usize> {
        let pending = self.names.register(
            bundle
                .names
                .iter()
                .map(|text| crate::runtime::names::Name::intern(text)),
        );
        if pending.is_empty() {
            return Ok(0);
        }
        let mut batch = crate::daemon::kv::Batch::default();
        for (id, name) in &pending {
            batch.insert(name_key(*id), name.as_str().as_bytes());
        }
        self.db.apply_batch(batch)?;
        self.names.confirm(&pending);
        Ok(pending.len())
    }

    /// Reads the dictionary's records again for names another node wrote
    /// since; returns whether there were any.
    pub fn reread_names(&self) -> StoreResult<bool> {
        let before = self.names.len();
        self.names.extend_from(read_names(&self.db)?);
        Ok(self.names.len() != before)
    }

    /// A customer state as the store writes it: names as the dictionary's
    /// ids, given now to names that have none.
    pub fn encode_state(&self, state: &CustomerState) -> EncodedState {
        let (bytes, names) = self
            .names
            .encode(|| postcard::to_allocvec(state).expect("a customer state always serializes"));
        EncodedState { bytes, names }
    }

    pub fn decode_state(&self, key: &[u8], bytes: &[u8]) -> StoreResult<CustomerState> {
        self.decode_customer(key, bytes).map(|(state, _)| state)
    }

    /// A customer record: the state and the number of its timer chunk, if
    /// it names one. A name id the dictionary does not know (another node
    /// wrote it: a standby reading) reads the dictionary again once.
    pub fn decode_customer(&self, key: &[u8], bytes: &[u8]) -> StoreResult<(CustomerState, Option<u64>)> {
        match decode_customer_with(&self.names, key, bytes) {
            Err(StoreError::Corrupt { .. }) if self.reread_names()? => decode_customer_with(&self.names, key, bytes),
            result => result,
        }
    }

    /// Writes one customer record (and the names it needs) in a batch of
    /// its own.
    pub fn put_customer(&self, state: &CustomerState, chunk: Option<u64>) -> StoreResult<()> {
        let mut batch = crate::daemon::kv::Batch::default();
        let names = self.encode_state(state).put(&mut batch, customer_key(&state.id), chunk);
        self.db.apply_batch(batch)?;
        self.names.confirm(&names);
        Ok(())
    }

    fn decode_record(&self, key: &[u8], value: Option<Bytes>) -> StoreResult<Option<(CustomerState, Option<u64>)>> {
        value.map(|bytes| self.decode_customer(key, &bytes)).transpose()
    }

    /// On PostgreSQL: moves every timer entry stored at partition -1 (a
    /// store written before timer chunks were kept per partition, whose
    /// chunks mix partitions) into chunks of one partition each, stored in
    /// it, and points their customers' records at them. One batch per old
    /// entry (the entry removed, its new chunks written, its customers'
    /// records rewritten), so a crash in between leaves every customer
    /// named by exactly one entry and the next open moves the rest. A
    /// customer listed whose record names another entry (or none) is
    /// dropped from the list, as firing it would skip it (the record, not
    /// the list, says whether a customer waits, a failing one's retry
    /// included). Nothing is
    /// written when no entry is left at partition -1.
    fn partition_timer_chunks(&self, pg: &crate::daemon::kv::pg::Pg) -> StoreResult<usize> {
        let mut old = Vec::new();
        for item in self.db.scan_prefix([PREFIX_TIMER]) {
            let (key, value) = item?;
            if pg.partition_of(&key) == PARTITION_NONE {
                old.push(decode_timer_entry(&key, &value)?);
            }
        }
        let mut moved = 0;
        for entry in &old {
            let mut batch = crate::daemon::kv::Batch::default();
            let mut changes = TimerChanges::on(self, 0);
            changes.fired(entry);
            let keys: Vec<Vec<u8>> = entry.customers.iter().map(|c| customer_key(c)).collect();
            let records = self.db.get_many(&keys)?;
            for ((customer, key), record) in entry.customers.iter().zip(&keys).zip(records) {
                let Some(record) = record else { continue };
                let (_, chunk) = self.decode_customer(key, &record)?;
                if chunk != entry.chunk {
                    continue;
                }
                let state = record[..record.len() - chunk.map_or(0, |_| 8)].to_vec();
                let new = changes.update(customer, Some((entry.due, entry.chunk)), Some(entry.due))?;
                batch.insert(key.clone(), encode_customer(state, new));
                moved += 1;
            }
            changes.write(self, &mut batch)?;
            self.db.apply_batch(batch)?;
        }
        if !old.is_empty() {
            tracing::info!(
                entries = old.len(),
                customers = moved,
                "timer entries moved into their customers' partitions"
            );
        }
        Ok(moved)
    }

    /// Rewrites every customer record of an older format (`Old`: format 1
    /// or 2, a state without subscriptions and remembered sends; format 3,
    /// remembered sends without attribution; format 4, no open goal
    /// windows of ended enrollments; format 5, no incarnation; format 6,
    /// names as text), each read with names as text, in [`STORE_FORMAT`],
    /// in one batch with the dictionary's new names, and marks the store
    /// (an unmarked store is new or older than marks).
    fn upgrade_customers<Old>(&self) -> StoreResult<()>
    where
        Old: serde::de::DeserializeOwned + Into<CustomerState>,
    {
        let mut batch = crate::daemon::kv::Batch::default();
        let mut names = Vec::new();
        for item in self.db.scan_prefix([PREFIX_CUSTOMER]) {
            let (key, value) = item?;
            let corrupt = |reason: String| StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason,
            };
            let (old, rest): (Old, &[u8]) = postcard::take_from_bytes(&value).map_err(|e| corrupt(e.to_string()))?;
            let chunk = match rest.len() {
                0 => None,
                8 => Some(decode_u64(rest)),
                n => return Err(corrupt(format!("{n} bytes after the state"))),
            };
            names.extend(self.encode_state(&old.into()).put(&mut batch, key.to_vec(), chunk));
        }
        // Marked even when empty: whatever this build writes from now on is
        // the current format, and must not be upgraded again.
        batch.insert(META_FORMAT, &STORE_FORMAT.to_be_bytes());
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.names.confirm(&names);
        Ok(())
    }

    /// Marks the store as written in [`STORE_FORMAT`] (from now on older
    /// builds that check the mark refuse it).
    pub fn mark_format(&self) -> StoreResult<()> {
        self.db.insert(META_FORMAT, &STORE_FORMAT.to_be_bytes())?;
        Ok(())
    }

    /// Whether the store holds nothing but its format mark.
    pub fn is_empty(&self) -> StoreResult<bool> {
        for key in self.db.iter().keys() {
            if key?.as_ref() != META_FORMAT {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> StoreResult<()> {
        self.db.flush()?;
        Ok(())
    }

    pub fn customer(&self, id: &str) -> StoreResult<Option<CustomerState>> {
        Ok(self.customer_record(id)?.map(|(state, _)| state))
    }

    /// A customer's state and the number of its timer chunk, if it names one.
    pub fn customer_record(&self, id: &str) -> StoreResult<Option<(CustomerState, Option<u64>)>> {
        let key = customer_key(id);
        self.decode_record(&key, self.db.get(&key)?)
    }

    /// The customer `id` was merged into, if it is an alias.
    pub fn alias(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(decode_alias(self.db.get(alias_key(id))?))
    }

    /// The ids merged into `customer`, in id order.
    pub fn aliases_of(&self, customer: &str) -> StoreResult<Vec<String>> {
        let prefix = aliases_of_key(customer, "");
        (self.db.scan_prefix(&prefix))
            .map(|item| item.map(|(key, _)| String::from_utf8_lossy(&key[prefix.len()..]).into_owned()))
            .collect::<Result<_, _>>()
    }

    /// The groups of `customer` (`group` calls), keyed by their store key.
    pub fn groups_of(&self, customer: &str) -> StoreResult<BTreeMap<Vec<u8>, serde_json::Value>> {
        let mut groups = BTreeMap::new();
        for item in self.db.scan_prefix(group_key(customer, "")) {
            let (key, value) = item?;
            groups.insert(key.to_vec(), serde_json::from_slice(&value).unwrap_or_default());
        }
        Ok(groups)
    }

    pub fn counter(&self, name: &str) -> StoreResult<i64> {
        let mut total = 0;
        for item in self.db.scan_prefix(stat_key(name)) {
            let (key, value) = item?;
            if decode_stat_key(&key).0 == name {
                total += decode_i64(&value);
            }
        }
        Ok(total)
    }

    /// The record of counter `name` kept in `partition` ([`stat_key_in`]).
    pub fn counter_in(&self, name: &str, partition: i32) -> StoreResult<i64> {
        Ok(self
            .db
            .get(stat_key_in(name, partition))?
            .map(|v| decode_i64(&v))
            .unwrap_or(0))
    }

    /// Every stats counter record: a name may have several (on PostgreSQL
    /// one per partition, [`stat_key_in`]), which `stats::persisted` adds
    /// up.
    pub fn counters(&self) -> StoreResult<Vec<(String, i64)>> {
        Ok(self
            .counter_records()?
            .into_iter()
            .map(|((_, name), value)| (name, value))
            .collect())
    }

    /// Every stats counter record by (partition, name).
    pub fn counter_records(&self) -> StoreResult<Vec<((i32, String), i64)>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([PREFIX_STAT]) {
            let (key, value) = item?;
            let (name, partition) = decode_stat_key(&key);
            out.push(((partition, name), decode_i64(&value)));
        }
        Ok(out)
    }

    /// The partition of a customer's records: on PostgreSQL the one its id
    /// hashes into, on sled [`PARTITION_NONE`] (sled has but the one).
    pub fn customer_partition(&self, customer: &str) -> i32 {
        match &self.db {
            crate::daemon::kv::Kv::Postgres(pg) => pg.partition_of(&customer_key(customer)),
            crate::daemon::kv::Kv::Sled(_) => PARTITION_NONE,
        }
    }

    /// Customers due at or before `now`, oldest first, at most `limit`
    /// (whole entries: the list may end past `limit`).
    pub fn due_timers(&self, now: Millis, limit: usize) -> StoreResult<Vec<(Millis, String)>> {
        let entries = self.due_timers_after(None, now, limit)?;
        Ok(entries
            .into_iter()
            .flat_map(|entry| entry.customers.into_iter().map(move |c| (entry.due, c)))
            .collect())
    }

    /// Timer entries due at or before `now`, oldest first, after the key
    /// `after`, until they name at least `limit` customers. On PostgreSQL
    /// only those of the partitions this node holds ([`Kv::range_of_held`]):
    /// each chunk lists customers of one partition, so a partition lost or
    /// held by another node holds up none of the others' wake-ups.
    ///
    /// [`Kv::range_of_held`]: crate::daemon::kv::Kv::range_of_held
    pub fn due_timers_after(&self, after: Option<&[u8]>, now: Millis, limit: usize) -> StoreResult<Vec<TimerEntry>> {
        use std::ops::Bound;
        let mut end = vec![PREFIX_TIMER];
        end.extend_from_slice(&encode_time(now.saturating_add(1)));
        let start = match after {
            Some(key) => Bound::Excluded(key.to_vec()),
            None => Bound::Included(vec![PREFIX_TIMER]),
        };
        let mut out = Vec::new();
        let mut customers = 0;
        for item in self.db.range_of_held::<Vec<u8>, _>((start, Bound::Excluded(end))) {
            let (key, value) = item?;
            let entry = decode_timer_entry(&key, &value)?;
            customers += entry.customers.len();
            out.push(entry);
            if customers >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// When the earliest timer is due, if any (on PostgreSQL: of the
    /// partitions this node holds).
    pub fn first_timer(&self) -> StoreResult<Option<Millis>> {
        match self.db.range_of_held(vec![PREFIX_TIMER]..vec![PREFIX_TIMER + 1]).next() {
            None => Ok(None),
            Some(item) => Ok(Some(decode_timer_entry(&item?.0, &[])?.due)),
        }
    }

    /// The next unused timer chunk number.
    pub fn next_timer_chunk(&self) -> StoreResult<u64> {
        Ok(self.db.get(META_TIMER_CHUNK)?.map(|v| decode_u64(&v)).unwrap_or(0))
    }

    /// Outbox records with sequence numbers in `from..=to`, in order, at most
    /// `limit` (whole chunks are read; the list is cut at `limit`).
    pub fn outbox_range(&self, from: u64, to: u64, limit: usize) -> StoreResult<Vec<(u64, String)>> {
        if from > to {
            return Ok(Vec::new());
        }
        // The chunk holding `from` starts at or before it.
        let start = match self.db.range(vec![PREFIX_OUTBOX]..=outbox_key(from)).next_back() {
            Some(item) => item?.0.to_vec(),
            None => outbox_key(from),
        };
        let mut out = Vec::new();
        for item in self.db.range(start..=outbox_key(to)) {
            let (key, value) = item?;
            // A group commit's chunk may hold many more records than are
            // asked for: the others are stepped over, not decoded, and the
            // walk stops at the first record past them (records ascend).
            for record in ChunkRecords::new(&key, &value)? {
                let (seq, line) = record?;
                if seq > to {
                    return Ok(out);
                }
                if seq >= from {
                    let line = std::str::from_utf8(line).map_err(|e| chunk_corrupt(&key, e))?;
                    out.push((seq, line.to_string()));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The highest outbox sequence number stored, if any.
    pub fn last_outbox_seq(&self) -> StoreResult<Option<u64>> {
        match self.db.scan_prefix([PREFIX_OUTBOX]).next_back() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                Ok(decode_chunk_borrowed(&key, &value)?.last().map(|(seq, _)| *seq))
            }
        }
    }

    pub fn first_outbox_seq(&self) -> StoreResult<Option<u64>> {
        match self.db.scan_prefix([PREFIX_OUTBOX]).next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                Ok(decode_chunk_borrowed(&key, &value)?.first().map(|(seq, _)| *seq))
            }
        }
    }

    /// Every outbox chunk: `(key, records)`.
    pub fn outbox_chunks(&self) -> StoreResult<Vec<(Vec<u8>, OutboxRecords)>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([PREFIX_OUTBOX]) {
            let (key, value) = item?;
            out.push((key.to_vec(), decode_chunk(&key, &value)?));
        }
        Ok(out)
    }

    /// The sink's cursor of the records at partition -1: on sled its one
    /// cursor, on PostgreSQL that of the records a store written before
    /// the outbox was kept per partition still holds ([`Cursors`]).
    pub fn cursor(&self, sink: &str) -> StoreResult<Option<u64>> {
        Ok(self.db.get(cursor_key(sink))?.map(|v| decode_u64(&v)))
    }

    pub fn set_cursor(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.db.insert(cursor_key(sink), &seq.to_be_bytes())?;
        Ok(())
    }

    /// Whether outbox sequence numbers carry their partition and each
    /// partition's records have a cursor of their own (PostgreSQL: drawn by
    /// `Pg::outbox_seq`); on sled one sequence runs through the outbox.
    pub fn outbox_partitioned(&self) -> bool {
        matches!(self.db, crate::daemon::kv::Kv::Postgres(_))
    }

    /// The partition of the outbox chunk under `key` (sled: -1).
    fn chunk_partition_of(&self, key: &[u8]) -> i32 {
        match &self.db {
            crate::daemon::kv::Kv::Postgres(pg) => pg.partition_of(key),
            crate::daemon::kv::Kv::Sled(_) => PARTITION_NONE,
        }
    }

    /// Every cursor of `sink`: `k` + sink (partition -1) and, on
    /// PostgreSQL, `k` + sink + `0x00` + partition ([`cursor_key_in`]).
    pub fn cursors(&self, sink: &str) -> StoreResult<Cursors> {
        let mut cursors = Cursors::default();
        if !self.outbox_partitioned() {
            if let Some(seq) = self.cursor(sink)? {
                cursors.by_partition.insert(PARTITION_NONE, seq);
            }
            return Ok(cursors);
        }
        let prefix = cursor_key(sink);
        for item in self.db.scan_prefix(&prefix) {
            let (key, value) = item?;
            let partition = match key.len() - prefix.len() {
                0 => PARTITION_NONE,
                3 if key[prefix.len()] == 0 => {
                    i32::from(u16::from_be_bytes([key[prefix.len() + 1], key[prefix.len() + 2]]))
                }
                // Another sink whose name extends this one.
                _ => continue,
            };
            cursors.by_partition.insert(partition, decode_u64(&value));
        }
        Ok(cursors)
    }

    /// Stores the cursors of `sink` that differ from `before`, in one
    /// batch; if that is refused (a partition lost meanwhile), each on its
    /// own, so the others are kept.
    pub fn set_cursors(&self, sink: &str, cursors: &Cursors, before: &Cursors) -> StoreResult<()> {
        let changed: Vec<(i32, u64)> = (cursors.by_partition.iter())
            .filter(|(partition, seq)| before.by_partition.get(partition) != Some(seq))
            .map(|(partition, seq)| (*partition, *seq))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let mut batch = crate::daemon::kv::Batch::default();
        for (partition, seq) in &changed {
            batch.insert(cursor_key_in(sink, *partition), &seq.to_be_bytes());
        }
        match self.db.apply_batch(batch) {
            Ok(()) => Ok(()),
            Err(error) if changed.len() > 1 => {
                tracing::debug!(%error, "storing the cursors one by one");
                let mut result = Ok(());
                for (partition, seq) in changed {
                    if let Err(error) = self.db.insert(cursor_key_in(sink, partition), &seq.to_be_bytes()) {
                        result = Err(error);
                    }
                }
                result
            }
            Err(error) => Err(error),
        }
    }

    /// The outbox records a sink at `cursors` has not had, in number
    /// order, at most `limit`, and the cursors once it has them all.
    ///
    /// On sled: those after the one cursor up to `durable` (the sequence
    /// number the commit thread published as flushed), as
    /// [`Store::outbox_range`]; when fewer than `limit`, the cursors move
    /// to `durable` (over the gaps of erased records). On PostgreSQL what
    /// is read is committed: the chunks of the partitions this node holds
    /// ([`Kv::range_of_held`], the legacy records at -1 while it holds the
    /// store's lease), each record whose number is above its partition's
    /// cursor, merged into number order (a group commit's chunks interleave
    /// in number: the records are numbered in group order), from the first
    /// chunk a round took a record from while the held set stays the same
    /// (every chunk before it was had then, and a new chunk of this node has
    /// a higher key); `durable` is not used.
    ///
    /// [`Kv::range_of_held`]: crate::daemon::kv::Kv::range_of_held
    pub fn outbox_after(&self, cursors: &Cursors, durable: u64, limit: usize) -> StoreResult<Delivery> {
        let mut next = cursors.clone();
        let crate::daemon::kv::Kv::Postgres(pg) = &self.db else {
            let from = cursors.get(PARTITION_NONE) + 1;
            let records = self.outbox_range(from, durable, limit)?;
            let complete = records.len() < limit;
            let items: Vec<OutboxItem> = (records.into_iter())
                .map(|(seq, line)| OutboxItem {
                    partition: PARTITION_NONE,
                    seq,
                    line,
                })
                .collect();
            let last = match (complete, items.last()) {
                (false, Some(item)) => item.seq,
                _ => durable.max(cursors.get(PARTITION_NONE)),
            };
            next.by_partition.insert(PARTITION_NONE, last);
            return Ok(Delivery {
                items,
                next,
                more: !complete,
            });
        };
        let owned = pg.owned();
        let start = match &cursors.resume {
            Some((key, held)) if *held == owned => key.clone(),
            _ => vec![PREFIX_OUTBOX],
        };
        // Whole chunks, in key order, until `limit` of the records read
        // are below the next chunk's key: a record below that key is below
        // every record not read (a chunk's key is at most its first
        // record), so the records read below it, in number order, are the
        // next ones of the outbox. A chunk holds its partition's records of
        // one group commit, whose numbers interleave with the other
        // partitions' (they are numbered in group order): the records
        // below the next key are a few per chunk read, not all of them.
        // `unbounded` holds the numbers read that are not yet below a
        // chunk's key; chunk keys only grow, so `below` only grows.
        let mut items = Vec::new();
        let mut bound = u64::MAX;
        let mut unbounded = std::collections::BinaryHeap::new();
        let mut below = 0;
        for item in self.db.range_of_held(start..vec![PREFIX_OUTBOX + 1]) {
            let (key, value) = item?;
            let first = decode_u64(&key[1..]);
            while unbounded.peek().is_some_and(|std::cmp::Reverse(seq)| *seq < first) {
                unbounded.pop();
                below += 1;
            }
            if below >= limit {
                bound = first;
                break;
            }
            let partition = self.chunk_partition_of(&key);
            let cursor = cursors.get(partition);
            for record in ChunkRecords::new(&key, &value)? {
                let (seq, line) = record?;
                if seq <= cursor {
                    continue;
                }
                if items.is_empty() {
                    // Every chunk before this one was had.
                    next.resume = Some((key.to_vec(), owned.clone()));
                }
                let line = std::str::from_utf8(line).map_err(|e| chunk_corrupt(&key, e))?;
                unbounded.push(std::cmp::Reverse(seq));
                items.push(OutboxItem {
                    partition,
                    seq,
                    line: line.to_string(),
                });
            }
        }
        let more = bound != u64::MAX || items.len() > limit;
        items.retain(|item| item.seq < bound);
        items.sort_by_key(|item| item.seq);
        items.truncate(limit);
        for item in &items {
            next.advance(item.partition, item.seq);
        }
        Ok(Delivery { items, next, more })
    }

    /// Removes the outbox chunks every sink has (`sinks`: each one's
    /// cursors). On sled those up to the lowest cursor
    /// ([`Store::remove_outbox_through`]); on PostgreSQL the held chunks in
    /// key order whose records are all at or below their partition's
    /// lowest cursor, up to the first that is not (sinks take records in
    /// key order, so what they all have is mostly a prefix; a chunk kept
    /// goes at a later collection).
    pub fn collect_outbox(&self, sinks: &[Cursors]) -> StoreResult<usize> {
        if sinks.is_empty() {
            return Ok(0);
        }
        if !self.outbox_partitioned() {
            let mut lowest = u64::MAX;
            for cursors in sinks {
                match cursors.by_partition.get(&PARTITION_NONE) {
                    Some(seq) => lowest = lowest.min(*seq),
                    None => return Ok(0),
                }
            }
            return self.remove_outbox_through(lowest);
        }
        let lowest = |partition: i32| {
            sinks
                .iter()
                .map(|c| c.by_partition.get(&partition).copied())
                .min()
                .flatten()
        };
        let mut batch = crate::daemon::kv::Batch::default();
        let mut removed = 0;
        for item in self.db.range_of_held(vec![PREFIX_OUTBOX]..vec![PREFIX_OUTBOX + 1]) {
            let (key, value) = item?;
            let Some(lowest) = lowest(self.chunk_partition_of(&key)) else {
                break;
            };
            let mut last = None;
            for record in ChunkRecords::new(&key, &value)? {
                last = Some(record?.0);
            }
            if last.is_some_and(|last| last > lowest) {
                break;
            }
            batch.remove(key);
            removed += 1;
        }
        self.finish_removal(batch, removed)
    }

    /// How many outbox records some sink of `sinks` has not had yet
    /// (`journeyc_outbox_depth`), over every partition.
    pub fn outbox_depth(&self, sinks: &[String]) -> StoreResult<u64> {
        if !self.outbox_partitioned() {
            let (Some(first), Some(last)) = (self.first_outbox_seq()?, self.last_outbox_seq()?) else {
                return Ok(0);
            };
            let lowest = sinks
                .iter()
                .map(|s| self.cursor(s).ok().flatten().unwrap_or(0))
                .min()
                .unwrap_or(0);
            return Ok(last.saturating_sub(lowest.max(first.saturating_sub(1))));
        }
        let mut all = Vec::new();
        for sink in sinks {
            all.push(self.cursors(sink)?);
        }
        let mut depth = 0;
        for item in self.db.scan_prefix([PREFIX_OUTBOX]) {
            let (key, value) = item?;
            let partition = self.chunk_partition_of(&key);
            let lowest = all.iter().map(|c| c.get(partition)).min().unwrap_or(0);
            for record in ChunkRecords::new(&key, &value)? {
                if record?.0 > lowest {
                    depth += 1;
                }
            }
        }
        Ok(depth)
    }

    /// Deletes outbox chunks whose records all have a sequence number up to
    /// `seq` (every sink has them).
    pub fn remove_outbox_through(&self, seq: u64) -> StoreResult<usize> {
        let mut batch = crate::daemon::kv::Batch::default();
        let mut removed = 0;
        let mut previous: Option<crate::daemon::kv::Bytes> = None;
        for item in self.db.range(vec![PREFIX_OUTBOX]..) {
            let (key, _) = item?;
            if key.first() != Some(&PREFIX_OUTBOX) {
                break;
            }
            // A chunk's records are all below the next chunk's key, so the
            // previous chunk can go when this key is at most seq + 1; no
            // need to decode it.
            let first = decode_u64(&key[1..]);
            if let Some(previous) = previous.take() {
                if first > seq.saturating_add(1) {
                    return self.finish_removal(batch, removed);
                }
                batch.remove(previous);
                removed += 1;
            }
            if first > seq {
                return self.finish_removal(batch, removed);
            }
            previous = Some(key);
        }
        // The last chunk is checked by decoding it.
        if let Some(previous) = previous {
            if let Some(value) = self.db.get(&previous)? {
                if decode_chunk_borrowed(&previous, &value)?
                    .last()
                    .is_none_or(|(last, _)| *last <= seq)
                {
                    batch.remove(previous);
                    removed += 1;
                }
            }
        }
        self.finish_removal(batch, removed)
    }

    fn finish_removal(&self, batch: crate::daemon::kv::Batch, removed: usize) -> StoreResult<usize> {
        if removed > 0 {
            self.db.apply_batch(batch)?;
        }
        Ok(removed)
    }

    pub fn add_dead_letter(&self, sink: &str, seq: u64, body: &serde_json::Value) -> StoreResult<()> {
        self.db.insert(dead_key(sink, seq), body.to_string().into_bytes())?;
        Ok(())
    }

    pub fn dead_letters(&self, limit: usize) -> StoreResult<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([PREFIX_DEAD]).take(limit) {
            let (_, value) = item?;
            if let Ok(json) = serde_json::from_slice(&value) {
                out.push(json);
            }
        }
        Ok(out)
    }

    pub fn next_seq(&self) -> StoreResult<Option<u64>> {
        Ok(self.db.get(META_SEQ)?.map(|v| decode_u64(&v)))
    }

    /// What the statistics remember of the customer's latest enrollment in
    /// the journey (see `daemon::stats`).
    pub fn groups(&self, customer: &str, journey: &str) -> StoreResult<crate::runtime::stats::Groups> {
        Ok(decode_arm(self.db.get(arm_key(customer, journey))?))
    }

    /// Stores a bundle under its content key (idempotent); returns the key.
    pub fn put_bundle(&self, bundle: &Bundle) -> StoreResult<String> {
        let bytes = postcard::to_allocvec(bundle).expect("a bundle always serializes");
        let key = bundle_key_of(&bytes);
        let full = [&[PREFIX_BUNDLE][..], key.as_bytes()].concat();
        if self.db.get(&full)?.is_none() {
            self.db.insert(full, bytes)?;
        }
        Ok(key)
    }

    /// Every stored bundle with its key.
    pub fn bundles(&self) -> StoreResult<Vec<(String, Bundle)>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([PREFIX_BUNDLE]) {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key[1..]).into_owned();
            let bundle = crate::compile::format::decode_stored(&value).map_err(|e| StoreError::Corrupt {
                key: name.clone(),
                reason: e.to_string(),
            })?;
            // Assert the content key still matches the bytes (see STYLE: check
            // versions around persistence).
            if bundle_key_of(&value) != name {
                return Err(StoreError::Corrupt {
                    key: name,
                    reason: "bundle bytes do not match their key".into(),
                });
            }
            out.push((name, bundle));
        }
        Ok(out)
    }

    pub fn remove_bundle(&self, key: &str) -> StoreResult<()> {
        self.db.remove([&[PREFIX_BUNDLE][..], key.as_bytes()].concat())?;
        Ok(())
    }

    pub fn current_bundle_key(&self) -> StoreResult<Option<String>> {
        Ok(self
            .db
            .get(META_CURRENT)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_current_bundle_key(&self, key: &str) -> StoreResult<()> {
        self.db.insert(META_CURRENT, key.as_bytes())?;
        Ok(())
    }
}

fn decode_alias(value: Option<Bytes>) -> Option<String> {
    value.map(|user| String::from_utf8_lossy(&user).into_owned())
}

fn decode_arm(value: Option<Bytes>) -> crate::runtime::stats::Groups {
    value.map(|v| super::stats::decode_groups(&v)).unwrap_or_default()
}

/// The point reads of one group commit, fetched together before it runs
/// (`commit.rs`): on PostgreSQL one query for all of them instead of a
/// round trip each. A key not fetched is read from the store when asked
/// for (a miss, counted). The values are the store's as the group began:
/// the commit thread is the only writer of what is fetched (`c`, `l`, `a`,
/// `f`, `t`) and writes nothing until the group's batch, and the lanes keep
/// the group's own changes themselves.
pub struct Prefetched<'s> {
    store: &'s Store,
    values: HashMap<Vec<u8>, Option<Bytes>>,
    misses: std::sync::atomic::AtomicUsize,
}

impl<'s> Prefetched<'s> {
    pub fn new(store: &'s Store) -> Prefetched<'s> {
        Prefetched {
            store,
            values: HashMap::new(),
            misses: Default::default(),
        }
    }

    /// Reads the `keys` not fetched yet, in one [`Kv::get_many`](super::kv::Kv::get_many)
    /// (none when all are held).
    pub fn fetch(&mut self, keys: impl IntoIterator<Item = Vec<u8>>) -> StoreResult<()> {
        let mut wanted: Vec<Vec<u8>> = keys.into_iter().filter(|key| !self.values.contains_key(key)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let values = self.store.db.get_many(&wanted)?;
        self.values.extend(wanted.into_iter().zip(values));
        Ok(())
    }

    pub fn holds(&self, key: &[u8]) -> bool {
        self.values.contains_key(key)
    }

    /// The store read from.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// How many reads were not fetched before (each a store read of its own).
    pub fn misses(&self) -> usize {
        self.misses.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn get(&self, key: &[u8]) -> StoreResult<Option<Bytes>> {
        match self.values.get(key) {
            Some(value) => Ok(value.clone()),
            None => {
                self.misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.store.db.get(key)
            }
        }
    }

    /// [`Store::customer_record`].
    pub fn customer_record(&self, id: &str) -> StoreResult<Option<(CustomerState, Option<u64>)>> {
        let key = customer_key(id);
        self.store.decode_record(&key, self.get(&key)?)
    }

    /// [`Store::alias`].
    pub fn alias(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(decode_alias(self.get(&alias_key(id))?))
    }

    /// [`Store::groups`].
    pub fn groups(&self, customer: &str, journey: &str) -> StoreResult<crate::runtime::stats::Groups> {
        Ok(decode_arm(self.get(&arm_key(customer, journey))?))
    }

    /// [`super::faults::read`].
    pub fn fault(&self, customer: &str) -> StoreResult<Option<super::faults::Fault>> {
        let key = super::faults::fault_key(customer);
        self.get(&key)?
            .map(|bytes| super::faults::decode(&key, &bytes))
            .transpose()
    }
}

pub fn bundle_key_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn customer_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(PREFIX_CUSTOMER);
    key.extend_from_slice(id.as_bytes());
    key
}

pub fn alias_key(id: &str) -> Vec<u8> {
    [&[PREFIX_ALIAS][..], id.as_bytes()].concat()
}

/// `G` + customer + `0x00` + group id; with an empty group id, the prefix
/// of a customer's groups.
pub fn group_key(customer: &str, group: &str) -> Vec<u8> {
    [&[PREFIX_GROUP][..], customer.as_bytes(), &[0], group.as_bytes()].concat()
}

/// `L` + customer + `0x00` + alias; with an empty alias, the prefix of a
/// customer's aliases.
pub fn aliases_of_key(customer: &str, alias: &str) -> Vec<u8> {
    [&[PREFIX_ALIASES_OF][..], customer.as_bytes(), &[0], alias.as_bytes()].concat()
}

/// Maps i64 milliseconds to bytes whose lexicographic order is numeric order.
pub fn encode_time(at: Millis) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_time(bytes: &[u8]) -> Millis {
    (decode_u64(bytes) ^ (1 << 63)) as i64
}

/// The key `t/at/ID` of one customer's timer (written before chunks).
pub fn timer_key(at: Millis, customer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + customer.len());
    key.push(PREFIX_TIMER);
    key.extend_from_slice(&encode_time(at));
    key.extend_from_slice(customer.as_bytes());
    key
}

pub fn timer_chunk_key(at: Millis, chunk: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(PREFIX_TIMER);
    key.extend_from_slice(&encode_time(at));
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

/// One key of the timer index: customers due at `due`.
#[derive(Clone, Debug, PartialEq)]
pub struct TimerEntry {
    pub due: Millis,
    /// The chunk number; `None` for a one-customer key `t/due/ID`.
    pub chunk: Option<u64>,
    pub customers: Vec<String>,
}

impl TimerEntry {
    pub fn key(&self) -> Vec<u8> {
        entry_key(self.due, self.chunk, self.customers.first().map_or("", String::as_str))
    }
}

/// The key of the entry that lists `customer` at `due`, in `chunk` or alone.
fn entry_key(due: Millis, chunk: Option<u64>, customer: &str) -> Vec<u8> {
    match chunk {
        Some(chunk) => timer_chunk_key(due, chunk),
        None => timer_key(due, customer),
    }
}

/// Decodes a timer index record (chunks have a value, one-customer keys none).
pub fn decode_timer_entry(key: &[u8], value: &[u8]) -> StoreResult<TimerEntry> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    };
    if key.len() < 9 || key[0] != PREFIX_TIMER {
        return Err(corrupt("not a timer key"));
    }
    let due = decode_time(&key[1..9]);
    if value.is_empty() {
        let customer = String::from_utf8_lossy(&key[9..]).into_owned();
        return Ok(TimerEntry {
            due,
            chunk: None,
            customers: vec![customer],
        });
    }
    if key.len() != 17 {
        return Err(corrupt("a timer chunk key has 17 bytes"));
    }
    let customers = postcard::from_bytes(value).map_err(|e| corrupt(&e.to_string()))?;
    Ok(TimerEntry {
        due,
        chunk: Some(decode_u64(&key[9..])),
        customers,
    })
}

/// The timer index changes of one batch. Customers whose wake-up changed are
/// taken out of their chunk (read, rewritten) and put into new chunks, one
/// series per due time; entries handed in by wake jobs are deleted whole.
pub struct TimerChanges {
    fired: HashSet<Vec<u8>>,
    /// Chunk key → customers to take out of it.
    leaving: HashMap<Vec<u8>, Vec<String>>,
    /// One-customer keys to delete.
    removed: Vec<Vec<u8>>,
    /// (Due time, partition) → new chunks `(number, customers)`, the last
    /// one open. The partition is always [`PARTITION_NONE`] on sled.
    new_chunks: BTreeMap<(Millis, i32), Vec<NewChunk>>,
    next_chunk: u64,
    /// On PostgreSQL: chunks list customers of one partition, numbered by
    /// its sequence ([`crate::daemon::kv::pg::Pg::timer_chunk_number`]);
    /// `None` on sled, numbered by `next_chunk` (`mtimerchunk`).
    partitioned: Option<crate::daemon::kv::pg::Pg>,
    /// Change in the number of customers waiting.
    pub waiting_delta: i64,
    /// The same change by the partition of the customers (on sled all at
    /// [`PARTITION_NONE`]).
    pub waiting_deltas: HashMap<i32, i64>,
}

/// A timer chunk being filled: its number and customers.
type NewChunk = (u64, Vec<String>);

/// The partition of records that name none (sled has but this one).
const PARTITION_NONE: i32 = crate::daemon::kv::pg::PARTITION_NONE;

impl TimerChanges {
    /// Changes numbered from `next_chunk` on, all partitions mixed: sled's
    /// timer index.
    pub fn new(next_chunk: u64) -> TimerChanges {
        TimerChanges {
            fired: HashSet::new(),
            leaving: HashMap::new(),
            removed: Vec::new(),
            new_chunks: BTreeMap::new(),
            next_chunk,
            partitioned: None,
            waiting_delta: 0,
            waiting_deltas: HashMap::new(),
        }
    }

    /// Changes to `store`'s timer index: on sled [`TimerChanges::new`]; on
    /// PostgreSQL new chunks list customers of one partition each, stored
    /// in it, with numbers from the database's sequence (`next_chunk` is
    /// then left as it is).
    pub fn on(store: &Store, next_chunk: u64) -> TimerChanges {
        let mut changes = TimerChanges::new(next_chunk);
        if let crate::daemon::kv::Kv::Postgres(pg) = &store.db {
            changes.partitioned = Some(pg.clone());
        }
        changes
    }

    /// An entry was handed to a wake job: it is deleted whole. (Every
    /// customer it still lists was loaded by that job and gets a new entry
    /// through [`TimerChanges::update`] if it still waits.)
    pub fn fired(&mut self, entry: &TimerEntry) {
        self.fired.insert(entry.key());
    }

    /// Records that `customer`'s wake-up goes from `old` (due time and chunk,
    /// as its stored record says) to `new`. Returns the chunk its record must
    /// name from now on.
    pub fn update(
        &mut self,
        customer: &str,
        old: Option<(Millis, Option<u64>)>,
        new: Option<Millis>,
    ) -> StoreResult<Option<u64>> {
        let delta = i64::from(new.is_some()) - i64::from(old.is_some());
        self.waiting_delta += delta;
        let partition = match &self.partitioned {
            Some(pg) => pg.partition_of(&customer_key(customer)),
            None => PARTITION_NONE,
        };
        if delta != 0 {
            *self.waiting_deltas.entry(partition).or_insert(0) += delta;
        }
        if let Some((due, chunk)) = old {
            let key = entry_key(due, chunk, customer);
            if !self.fired.contains(&key) {
                if new == Some(due) {
                    return Ok(chunk);
                }
                match chunk {
                    Some(_) => self.leaving.entry(key).or_default().push(customer.to_string()),
                    None => self.removed.push(key),
                }
            }
        }
        let Some(at) = new else {
            return Ok(None);
        };
        let chunks = self.new_chunks.entry((at, partition)).or_default();
        if chunks
            .last()
            .is_none_or(|(_, customers)| customers.len() >= TIMER_CHUNK_MAX)
        {
            let number = match &self.partitioned {
                Some(pg) => pg.timer_chunk_number(partition)?,
                None => {
                    self.next_chunk += 1;
                    self.next_chunk - 1
                }
            };
            chunks.push((number, Vec::new()));
        }
        let (number, customers) = chunks.last_mut().expect("pushed above");
        customers.push(customer.to_string());
        Ok(Some(*number))
    }

    /// The earliest due time of a new chunk.
    pub fn earliest_new(&self) -> Option<Millis> {
        self.new_chunks.keys().next().map(|(at, _)| *at)
    }

    /// Puts the changes into `batch` (reading the chunks customers leave).
    /// Returns the next unused chunk number.
    pub fn write(self, store: &Store, batch: &mut crate::daemon::kv::Batch) -> StoreResult<u64> {
        for key in self.fired.into_iter().chain(self.removed) {
            batch.remove(key);
        }
        // The chunks customers leave, read in one go.
        let leaving: Vec<(Vec<u8>, Vec<String>)> = self.leaving.into_iter().collect();
        let keys: Vec<&[u8]> = leaving.iter().map(|(key, _)| key.as_slice()).collect();
        let values = store.db.get_many(&keys)?;
        for ((key, leaving), value) in leaving.into_iter().zip(values) {
            let Some(value) = value else {
                continue;
            };
            let leaving: HashSet<String> = leaving.into_iter().collect();
            let mut entry = decode_timer_entry(&key, &value)?;
            entry.customers.retain(|c| !leaving.contains(c));
            if entry.customers.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, encode_timer_chunk(&entry.customers));
            }
        }
        for ((at, _), chunks) in self.new_chunks {
            for (number, customers) in chunks {
                batch.insert(timer_chunk_key(at, number), encode_timer_chunk(&customers));
            }
        }
        if self.partitioned.is_none() {
            batch.insert(META_TIMER_CHUNK, &self.next_chunk.to_be_bytes());
        }
        Ok(self.next_chunk)
    }
}

fn encode_timer_chunk(customers: &[String]) -> Vec<u8> {
    postcard::to_allocvec(customers).expect("customer ids always serialize")
}

pub fn outbox_key(seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(PREFIX_OUTBOX);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Outbox records `(sequence number, JSON line)`, ascending.
pub type OutboxRecords = Vec<(u64, String)>;

/// Outbox records are stored in chunks, one per group commit: the key is the
/// first sequence number, the value postcard `Vec<(seq, JSON line)>` with
/// consecutive ascending numbers (fewer keys per event: sled's cost is per key).
pub fn encode_chunk(records: &[(u64, String)]) -> Vec<u8> {
    postcard::to_allocvec(records).expect("outbox records always serialize")
}

/// The chunk of a group commit's records, numbered from `first`, without
/// copying the lines into a list first (the same bytes as [`encode_chunk`]).
pub fn encode_numbered_chunk<'a, I>(first: u64, lines: I) -> Vec<u8>
where
    I: ExactSizeIterator<Item = &'a str> + Clone,
{
    struct Numbered<I>(u64, I);
    impl<'a, I: ExactSizeIterator<Item = &'a str> + Clone> serde::Serialize for Numbered<I> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq((self.0..).zip(self.1.clone()))
        }
    }
    postcard::to_allocvec(&Numbered(first, lines)).expect("outbox records always serialize")
}

/// A chunk of records with the numbers given (ascending; on PostgreSQL
/// not consecutive: `Pg::outbox_seq`), the same bytes as [`encode_chunk`].
pub fn encode_seq_chunk(records: &[(u64, &str)]) -> Vec<u8> {
    postcard::to_allocvec(records).expect("outbox records always serialize")
}

pub fn decode_chunk(key: &[u8], bytes: &[u8]) -> StoreResult<Vec<(u64, String)>> {
    postcard::from_bytes(bytes).map_err(|e| chunk_corrupt(key, e))
}

/// A chunk's records with their lines borrowed from `bytes`.
pub fn decode_chunk_borrowed<'b>(key: &[u8], bytes: &'b [u8]) -> StoreResult<Vec<(u64, &'b str)>> {
    postcard::from_bytes(bytes).map_err(|e| chunk_corrupt(key, e))
}

fn chunk_corrupt(key: &[u8], error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: error.to_string(),
    }
}

/// The records of an outbox chunk one at a time, each line as its bytes
/// (not checked as UTF-8): the postcard `Vec<(u64, String)>` read element
/// by element.
struct ChunkRecords<'b> {
    key: &'b [u8],
    rest: &'b [u8],
    left: usize,
}

impl<'b> ChunkRecords<'b> {
    fn new(key: &'b [u8], bytes: &'b [u8]) -> StoreResult<ChunkRecords<'b>> {
        let (left, rest) = postcard::take_from_bytes::<usize>(bytes).map_err(|e| chunk_corrupt(key, e))?;
        Ok(ChunkRecords { key, rest, left })
    }
}

impl<'b> Iterator for ChunkRecords<'b> {
    type Item = StoreResult<(u64, &'b [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(match postcard::take_from_bytes::<(u64, &[u8])>(self.rest) {
            Ok((record, rest)) => {
                self.rest = rest;
                Ok(record)
            }
            Err(error) => {
                self.left = 0;
                Err(chunk_corrupt(self.key, error))
            }
        })
    }
}

pub fn cursor_key(sink: &str) -> Vec<u8> {
    [&[PREFIX_CURSOR][..], sink.as_bytes()].concat()
}

/// The key of `sink`'s cursor of `partition`'s records (PostgreSQL: the
/// sink, `0x00` and the partition as u16 BE, so the backend stores it there);
/// [`PARTITION_NONE`] is [`cursor_key`] itself (sled's one cursor, and on
/// PostgreSQL that of the records a store written before holds at -1).
pub fn cursor_key_in(sink: &str, partition: i32) -> Vec<u8> {
    key_in(PREFIX_CURSOR, sink, partition)
}

/// The sink and partition of a `k` key ([`cursor_key_in`]).
pub fn decode_cursor_key(key: &[u8]) -> (String, i32) {
    decode_key_in(key)
}

/// `prefix` + `name` + `0x00` + `partition` (u16 BE): one partition's share
/// of a record kept per partition on PostgreSQL (`kv/pg.rs` reads the
/// partition back from the key); for [`PARTITION_NONE`], `prefix` + `name`.
fn key_in(prefix: u8, name: &str, partition: i32) -> Vec<u8> {
    if partition == PARTITION_NONE {
        return [&[prefix][..], name.as_bytes()].concat();
    }
    let partition = u16::try_from(partition).expect("partitions fit in 16 bits (kv/pg.rs)");
    [&[prefix][..], name.as_bytes(), &[0], &partition.to_be_bytes()].concat()
}

/// The name and partition of a [`key_in`] key.
fn decode_key_in(key: &[u8]) -> (String, i32) {
    let rest = &key[1.min(key.len())..];
    match rest.len().checked_sub(3) {
        Some(at) if rest[at] == 0 => (
            String::from_utf8_lossy(&rest[..at]).into_owned(),
            i32::from(u16::from_be_bytes([rest[at + 1], rest[at + 2]])),
        ),
        _ => (String::from_utf8_lossy(rest).into_owned(), PARTITION_NONE),
    }
}

/// What a sink reads in one round ([`Store::outbox_after`]).
pub struct Delivery {
    /// The records, in number order (on one node: group order).
    pub items: Vec<OutboxItem>,
    /// The cursors once the sink has every one of them.
    pub next: Cursors,
    /// Whether more records may be waiting (a round cut at the limit).
    pub more: bool,
}

/// One outbox record as a sink reads it ([`Store::outbox_after`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    /// The partition of its chunk (-1 on sled).
    pub partition: i32,
    pub seq: u64,
    pub line: String,
}

/// A sink's place in the outbox: the last sequence number it has of each
/// partition's records (on sled one, at -1: `k` + sink). A partition
/// without one has had none of its records (a new sink starts at the
/// oldest record kept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursors {
    pub by_partition: BTreeMap<i32, u64>,
    /// On PostgreSQL: the key from which the next read starts, and the held
    /// set it is good for ([`Store::outbox_after`]).
    resume: Option<(Vec<u8>, crate::daemon::kv::pg::Owned)>,
}

impl Cursors {
    /// The one cursor of sled (and of the records at -1).
    pub fn one(seq: u64) -> Cursors {
        let mut cursors = Cursors::default();
        cursors.by_partition.insert(PARTITION_NONE, seq);
        cursors
    }

    /// The last sequence number had of `partition`'s records (0: none).
    pub fn get(&self, partition: i32) -> u64 {
        self.by_partition.get(&partition).copied().unwrap_or(0)
    }

    /// The sink has the record `seq` of `partition` (and every one before).
    pub fn advance(&mut self, partition: i32, seq: u64) {
        let cursor = self.by_partition.entry(partition).or_insert(0);
        *cursor = (*cursor).max(seq);
    }
}

pub fn dead_key(sink: &str, seq: u64) -> Vec<u8> {
    [&[PREFIX_DEAD][..], sink.as_bytes(), &[0], &seq.to_be_bytes()].concat()
}

pub fn stat_key(name: &str) -> Vec<u8> {
    [&[PREFIX_STAT][..], name.as_bytes()].concat()
}

/// The key of counter `name`'s share kept in `partition` (PostgreSQL:
/// name + `0x00` + partition, u16 BE, so the backend stores it there);
/// [`PARTITION_NONE`] is [`stat_key`] itself (sled's one record per name,
/// and on PostgreSQL the totals of a store written before counters were
/// kept per partition, still summed in).
pub fn stat_key_in(name: &str, partition: i32) -> Vec<u8> {
    key_in(PREFIX_STAT, name, partition)
}

/// The counter name and partition of an `s` key ([`stat_key_in`]).
pub fn decode_stat_key(key: &[u8]) -> (String, i32) {
    decode_key_in(key)
}

pub fn arm_key(customer: &str, journey: &str) -> Vec<u8> {
    [&[PREFIX_ARM][..], customer.as_bytes(), &[0], journey.as_bytes()].concat()
}

pub fn decode_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(buf)
}

pub fn decode_i64(bytes: &[u8]) -> i64 {
    decode_u64(bytes) as i64
}

/// A customer state encoded by [`Store::encode_state`], with the names whose
/// ids it uses that the store may not hold yet.
#[derive(Clone, Debug)]
pub struct EncodedState {
    pub bytes: Vec<u8>,
    names: Vec<(u32, crate::runtime::names::Name)>,
}

impl EncodedState {
    /// Puts the customer record (the state, then its timer chunk) under
    /// `key` into `batch`, with the dictionary records of the names the
    /// store may not hold yet, so that no record names an id the store
    /// lacks. Returns those names: once the batch committed,
    /// [`Dictionary::confirm`] them (else later batches write them again).
    pub fn put(
        self,
        batch: &mut crate::daemon::kv::Batch,
        key: Vec<u8>,
        chunk: Option<u64>,
    ) -> Vec<(u32, crate::runtime::names::Name)> {
        for (id, name) in &self.names {
            batch.insert(name_key(*id), name.as_str().as_bytes());
        }
        batch.insert(key, encode_customer(self.bytes, chunk));
        self.names
    }
}

/// The key of name id `id` in the dictionary.
pub fn name_key(id: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(5);
    key.push(PREFIX_NAME);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The dictionary's records: `(id, name)`.
fn read_names(db: &crate::daemon::kv::Kv) -> StoreResult<Vec<(u32, crate::runtime::names::Name)>> {
    let mut names = Vec::new();
    for item in db.scan_prefix([PREFIX_NAME]) {
        let (key, value) = item?;
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: String::from_utf8_lossy(&key).into_owned(),
            reason: reason.to_string(),
        };
        let id: [u8; 4] = key[1..].try_into().map_err(|_| corrupt("a name id is 4 bytes"))?;
        let name = std::str::from_utf8(&value).map_err(|_| corrupt("a name is UTF-8"))?;
        names.push((u32::from_be_bytes(id), crate::runtime::names::Name::intern(name)));
    }
    Ok(names)
}

/// A customer record: the encoded state, then its timer chunk number.
pub fn encode_customer(mut state: Vec<u8>, chunk: Option<u64>) -> Vec<u8> {
    if let Some(chunk) = chunk {
        state.extend_from_slice(&chunk.to_be_bytes());
    }
    state
}

/// A customer record read with `names` (a store's dictionary; the store's
/// own reads go through [`Store::decode_customer`]).
pub fn decode_customer_with(
    names: &Arc<Dictionary>,
    key: &[u8],
    bytes: &[u8],
) -> StoreResult<(CustomerState, Option<u64>)> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    let (state, rest) = names
        .decode(|| postcard::take_from_bytes(bytes))
        .map_err(|e| corrupt(e.to_string()))?;
    match rest.len() {
        0 => Ok((state, None)),
        8 => Ok((state, Some(decode_u64(rest)))),
        n => Err(corrupt(format!("{n} bytes after the state"))),
    }
}

/// A customer state as stores of format 1 and 2 hold it (before
/// subscriptions and remembered sends): read only to upgrade them.
#[derive(serde::Deserialize)]
struct StateV2 {
    id: String,
    #[serde(with = "crate::runtime::names::text_keys")]
    profile: NameMap<crate::compile::bytecode::Value>,
    first_seen: Option<Millis>,
    clock: Millis,
    last_event: Option<Millis>,
    last_event_by_name: NameMap<Millis>,
    history: NameMap<std::collections::VecDeque<Millis>>,
    sends: std::collections::VecDeque<(Millis, Name)>,
    segments: NameMap<bool>,
    enrollments: NameMap<Box<crate::runtime::state::Enrollment>>,
    entries: NameMap<crate::runtime::state::EntryHistory>,
    schedules: NameMap<Millis>,
    segment_check: Option<Millis>,
    message_ids: std::collections::VecDeque<(Millis, String)>,
}

impl From<StateV2> for CustomerState {
    fn from(old: StateV2) -> CustomerState {
        CustomerState {
            id: old.id,
            profile: old.profile,
            first_seen: old.first_seen,
            clock: old.clock,
            last_event: old.last_event,
            last_event_by_name: old.last_event_by_name,
            history: old.history,
            sends: old.sends,
            segments: old.segments,
            enrollments: old.enrollments,
            entries: old.entries,
            schedules: old.schedules,
            segment_check: old.segment_check,
            message_ids: old.message_ids,
            ..CustomerState::default()
        }
    }
}

/// A customer state as stores of format 3 hold it (remembered sends
/// without attribution): read only to upgrade them. postcard writes a
/// struct as its fields one after the other, so format 2's fields nest.
#[derive(serde::Deserialize)]
struct StateV3 {
    v2: StateV2,
    subscriptions: BTreeMap<crate::syntax::ast::Channel, crate::runtime::state::Subscription>,
    sent: std::collections::VecDeque<SentV3>,
}

/// A remembered send of format 3.
#[derive(serde::Deserialize)]
struct SentV3 {
    at: Millis,
    id: String,
    journey: Name,
    message: Name,
    channel: crate::syntax::ast::Channel,
}

impl From<StateV3> for CustomerState {
    fn from(old: StateV3) -> CustomerState {
        let sent = old
            .sent
            .into_iter()
            .map(|sent| crate::runtime::state::Sent {
                at: sent.at,
                id: sent.id,
                journey: sent.journey,
                message: sent.message,
                channel: sent.channel,
                // Unknown: engagement with it is counted for the message,
                // under no version and no arm.
                version: crate::runtime::state::no_version(),
                pc: 0,
                arm: None,
                engaged: 0,
            })
            .collect();
        CustomerState {
            subscriptions: old.subscriptions,
            sent,
            ..old.v2.into()
        }
    }
}

/// A customer state as stores of format 4 hold it (no open goal windows of
/// ended enrollments): read only to upgrade them.
#[derive(serde::Deserialize)]
struct StateV4 {
    v2: StateV2,
    subscriptions: BTreeMap<crate::syntax::ast::Channel, crate::runtime::state::Subscription>,
    sent: std::collections::VecDeque<crate::runtime::state::Sent>,
}

/// A customer state as stores of format 5 hold it (no incarnation): read
/// only to upgrade them.
#[derive(serde::Deserialize)]
struct StateV5 {
    v4: StateV4,
    attributions: NameMap<crate::runtime::state::Attribution>,
}

impl From<StateV5> for CustomerState {
    fn from(old: StateV5) -> CustomerState {
        CustomerState {
            attributions: old.attributions,
            ..old.v4.into()
        }
    }
}

impl From<StateV4> for CustomerState {
    fn from(old: StateV4) -> CustomerState {
        // Enrollments that ended before the upgrade count no later goal.
        CustomerState {
            subscriptions: old.subscriptions,
            sent: old.sent,
            ..old.v2.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_encoding_preserves_order() {
        let times = [-5_000, -1, 0, 1, 1_700_000_000_000, i64::MAX / 2];
        for pair in times.windows(2) {
            assert!(encode_time(pair[0]) < encode_time(pair[1]));
            assert_eq!(decode_time(&encode_time(pair[0])), pair[0]);
        }
    }

    #[test]
    fn timer_keys_round_trip_and_sort_by_due_time() {
        let a = timer_key(1_000, "zed");
        let b = timer_chunk_key(1_500, 7);
        let c = timer_key(2_000, "abe");
        assert!(a < b && b < c);
        let zed = decode_timer_entry(&a, &[]).expect("timer key");
        assert_eq!(
            (zed.due, zed.chunk, zed.customers),
            (1_000, None, vec!["zed".to_string()])
        );
        let chunk = decode_timer_entry(&b, &encode_timer_chunk(&["x".into(), "y".into()])).expect("chunk");
        assert_eq!(chunk.key(), b);
        assert_eq!((chunk.due, chunk.chunk, chunk.customers.len()), (1_500, Some(7), 2));
    }

    #[test]
    fn customer_records_carry_their_timer_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let mut state = CustomerState::new("ann");
        state.schedules.insert("weekly".into(), 7);
        for chunk in [None, Some(42)] {
            let bytes = encode_customer(store.encode_state(&state).bytes, chunk);
            assert_eq!(
                store.decode_customer(b"cann", &bytes).expect("decode"),
                (state.clone(), chunk)
            );
        }
        let mut bad = store.encode_state(&state).bytes;
        bad.push(1);
        assert!(store.decode_customer(b"cann", &bad).is_err());
    }

    /// A record names the journeys, events, segments and messages it is
    /// keyed by as dictionary ids; each name's record goes into the batch
    /// of the first record that uses it, and a store opened again (or a
    /// standby reading) reads them back.
    #[test]
    fn names_are_written_with_the_first_record_that_uses_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = CustomerState::new("ann");
        state.schedules.insert("weekly".into(), 7);
        state.history.insert("paid".into(), [1, 2].into());
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            let encoded = store.encode_state(&state);
            assert!(
                !String::from_utf8_lossy(&encoded.bytes).contains("weekly"),
                "names are ids in the record"
            );
            let mut batch = crate::daemon::kv::Batch::default();
            let names = encoded.put(&mut batch, customer_key("ann"), None);
            assert_eq!(names.len(), 2, "{names:?}");
            store.db.apply_batch(batch).expect("apply");
            store.names.confirm(&names);
            // Written once: the next record using them adds nothing.
            let again = store.encode_state(&state);
            let mut batch = crate::daemon::kv::Batch::default();
            assert!(again.put(&mut batch, customer_key("bob"), None).is_empty());
            store.flush().expect("flush");
            assert_eq!(store.db.scan_prefix([PREFIX_NAME]).count(), 2);
        }
        let store = reopen(dir.path());
        assert_eq!(store.customer("ann").expect("read"), Some(state.clone()));
        // A name added after this store object read the dictionary (as by
        // another node) is read again when a record names it.
        let other = Store::reading(store.db.clone()).expect("read");
        state.segments.insert("vip".into(), true);
        other.put_customer(&state, None).expect("write");
        assert_eq!(store.customer("ann").expect("read"), Some(state));
    }

    #[test]
    fn a_counter_share_names_its_partition_and_the_total_keeps_its_key() {
        assert_eq!(stat_key_in("g/timers", PARTITION_NONE), stat_key("g/timers"));
        assert_eq!(cursor_key_in("jsonl:x", PARTITION_NONE), cursor_key("jsonl:x"));
        assert_eq!(
            decode_cursor_key(&cursor_key_in("jsonl:x", 7)),
            ("jsonl:x".to_string(), 7)
        );
        assert_eq!(
            decode_cursor_key(&cursor_key("jsonl:x")),
            ("jsonl:x".to_string(), PARTITION_NONE)
        );
        assert_eq!(
            decode_stat_key(&stat_key("g/timers")),
            ("g/timers".to_string(), PARTITION_NONE)
        );
        let share = stat_key_in("j/onboarding/entered", 255);
        assert_eq!(decode_stat_key(&share), ("j/onboarding/entered".to_string(), 255));
        assert_eq!(crate::daemon::kv::pg::partition_of(&share, 256), 255);
        assert_eq!(
            crate::daemon::kv::pg::partition_of(&stat_key("g/timers"), 256),
            PARTITION_NONE
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        store.db.insert(stat_key("g/x"), &5i64.to_be_bytes()).expect("insert");
        store
            .db
            .insert(stat_key_in("g/x", 3), &(-2i64).to_be_bytes())
            .expect("insert");
        store.db.insert(stat_key("g/xy"), &7i64.to_be_bytes()).expect("insert");
        assert_eq!(
            store.counter("g/x").expect("counter"),
            3,
            "the shares are summed, g/xy is not g/x"
        );
        assert_eq!(store.counter_in("g/x", 3).expect("counter"), -2);
    }

    #[test]
    fn timer_changes_move_customers_between_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let write = |changes: TimerChanges| {
            let mut batch = crate::daemon::kv::Batch::default();
            let next = changes.write(&store, &mut batch).expect("write");
            store.db.apply_batch(batch).expect("apply");
            next
        };
        // A key written before chunks, and a chunk just over the cap.
        store.db.insert(timer_key(50, "old"), &[]).expect("insert");
        let mut changes = TimerChanges::new(0);
        let ids: Vec<String> = (0..=TIMER_CHUNK_MAX).map(|i| format!("c{i}")).collect();
        let slots: Vec<Option<u64>> = ids
            .iter()
            .map(|id| changes.update(id, None, Some(100)).expect("update"))
            .collect();
        assert_eq!(slots[0], Some(0));
        assert_eq!(slots[TIMER_CHUNK_MAX], Some(1), "a full chunk is not added to");
        assert_eq!(changes.waiting_delta, ids.len() as i64);
        assert_eq!(write(changes), 2);
        assert_eq!(store.due_timers(100, usize::MAX).expect("due").len(), ids.len() + 1);
        // c0 moves, c1 stays, `old` moves into a chunk; chunk 1 fires.
        let mut changes = TimerChanges::new(2);
        let fired = store
            .due_timers_after(None, 100, usize::MAX)
            .expect("due")
            .pop()
            .expect("chunk 1");
        assert_eq!(fired.chunk, Some(1));
        changes.fired(&fired);
        assert_eq!(
            changes.update("c0", Some((100, Some(0))), Some(200)).expect("update"),
            Some(2)
        );
        assert_eq!(
            changes.update("c1", Some((100, Some(0))), Some(100)).expect("update"),
            Some(0)
        );
        assert_eq!(
            changes.update("old", Some((50, None)), Some(200)).expect("update"),
            Some(2)
        );
        let last = &ids[TIMER_CHUNK_MAX];
        assert_eq!(changes.update(last, Some((100, Some(1))), None).expect("update"), None);
        assert_eq!(changes.earliest_new(), Some(200));
        assert_eq!(changes.waiting_delta, -1);
        write(changes);
        let due = store.due_timers(1_000, usize::MAX).expect("due");
        assert_eq!(due.len(), ids.len(), "c0 and old moved, the last one left");
        assert!(due.contains(&(200, "c0".to_string())) && due.contains(&(200, "old".to_string())));
        assert!(due.contains(&(100, "c1".to_string())) && !due.contains(&(100, "c0".to_string())));
        assert_eq!(store.first_timer().expect("first"), Some(100));
    }

    #[test]
    fn numbered_chunks_are_the_bytes_of_listed_ones() {
        let lines = ["{\"a\":1}", "", "{\"b\":\"é\"}"];
        let listed: Vec<(u64, String)> = (41..).zip(lines.iter().map(|l| l.to_string())).collect();
        let bytes = encode_numbered_chunk(41, lines.iter().copied());
        assert_eq!(bytes, encode_chunk(&listed));
        let borrowed = decode_chunk_borrowed(b"o", &bytes).expect("decode");
        assert_eq!(
            borrowed,
            listed.iter().map(|(s, l)| (*s, l.as_str())).collect::<Vec<_>>()
        );
        assert!(decode_chunk_borrowed(b"o", &bytes[..bytes.len() - 1]).is_err());
        // Read through the store: from the middle of the chunk, and a line
        // that is not UTF-8 is refused when it is read, not when stepped over.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        store.db.insert(outbox_key(41), bytes).expect("insert");
        let range = store.outbox_range(42, 43, 10).expect("range");
        assert_eq!(range, listed[1..].to_vec());
        let torn = postcard::to_allocvec(&vec![(50u64, vec![b'{']), (51, vec![0xff])]).expect("encode");
        store.db.insert(outbox_key(50), torn).expect("insert");
        assert_eq!(
            store.outbox_range(50, 50, 10).expect("range"),
            vec![(50, "{".to_string())]
        );
        assert!(store.outbox_range(50, 51, 10).is_err());
    }

    #[test]
    fn prefetched_reads_answer_as_the_store_was_and_count_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let state = CustomerState::new("a");
        store
            .db
            .insert(
                customer_key("a"),
                encode_customer(store.encode_state(&state).bytes, Some(7)),
            )
            .expect("insert");
        store.db.insert(alias_key("anon"), &b"a"[..]).expect("insert");
        let mut reads = Prefetched::new(&store);
        reads
            .fetch([
                customer_key("a"),
                customer_key("b"),
                alias_key("anon"),
                customer_key("a"),
            ])
            .expect("fetch");
        // Changed after the fetch: the fetched values stand.
        store
            .db
            .insert(
                customer_key("b"),
                encode_customer(store.encode_state(&state).bytes, None),
            )
            .expect("insert");
        let (read, chunk) = reads.customer_record("a").expect("read").expect("a");
        assert_eq!((read.id.as_str(), chunk), ("a", Some(7)));
        assert!(reads.customer_record("b").expect("read").is_none());
        assert_eq!(reads.alias("anon").expect("alias").as_deref(), Some("a"));
        assert_eq!(reads.misses(), 0);
        // Not fetched: read from the store, and counted.
        assert!(reads.alias("b").expect("alias").is_none());
        assert!(reads.groups("a", "j").expect("groups").is_empty());
        assert_eq!(reads.misses(), 2);
        assert!(reads.holds(&customer_key("b")) && !reads.holds(&alias_key("b")));
    }

    /// On sled a sink's read is the one cursor's range up to the durable
    /// number, moving over gaps when it is all read, as before cursors per
    /// partition; collection removes what the lowest cursor passed.
    #[test]
    fn on_sled_a_sink_reads_after_its_one_cursor_up_to_the_durable_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        assert!(!store.outbox_partitioned());
        let chunk = |seqs: std::ops::RangeInclusive<u64>| {
            encode_chunk(&seqs.map(|s| (s, format!("{{\"n\":{s}}}"))).collect::<Vec<_>>())
        };
        store.db.insert(outbox_key(1), chunk(1..=3)).expect("insert");
        store.db.insert(outbox_key(4), chunk(4..=5)).expect("insert");
        let seqs = |delivery: &Delivery| delivery.items.iter().map(|i| (i.partition, i.seq)).collect::<Vec<_>>();
        let all = store.outbox_after(&Cursors::one(1), 4, 10).expect("read");
        assert_eq!(
            seqs(&all),
            vec![(PARTITION_NONE, 2), (PARTITION_NONE, 3), (PARTITION_NONE, 4)]
        );
        assert_eq!((all.next.clone(), all.more), (Cursors::one(4), false));
        let cut = store.outbox_after(&Cursors::one(1), 5, 2).expect("read");
        assert_eq!(seqs(&cut), vec![(PARTITION_NONE, 2), (PARTITION_NONE, 3)]);
        assert_eq!((cut.next.clone(), cut.more), (Cursors::one(3), true));
        // Past the last record (an erased customer's gap): the durable number.
        let gap = store.outbox_after(&Cursors::one(5), 9, 10).expect("read");
        assert!(gap.items.is_empty());
        assert_eq!(gap.next, Cursors::one(9));
        store
            .set_cursors("jsonl:x", &Cursors::one(3), &Cursors::default())
            .expect("store");
        assert_eq!(store.cursors("jsonl:x").expect("cursors"), Cursors::one(3));
        assert_eq!(store.cursor("jsonl:x").expect("cursor"), Some(3));
        assert_eq!(store.outbox_depth(&["jsonl:x".to_string()]).expect("depth"), 2);
        // A sink without a cursor keeps everything.
        assert_eq!(
            store
                .collect_outbox(&[Cursors::one(3), Cursors::default()])
                .expect("gc"),
            0
        );
        assert_eq!(
            store.collect_outbox(&[Cursors::one(3), Cursors::one(5)]).expect("gc"),
            1
        );
        assert_eq!(store.first_outbox_seq().expect("first"), Some(4));
    }

    #[test]
    fn due_timers_and_outbox_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        store.db.insert(timer_key(30, "c"), &[]).expect("insert");
        store.db.insert(timer_key(10, "a"), &[]).expect("insert");
        store.db.insert(timer_key(20, "b"), &[]).expect("insert");
        assert_eq!(
            store.due_timers(20, 10).expect("due"),
            vec![(10, "a".to_string()), (20, "b".to_string())]
        );
        assert_eq!(store.first_timer().expect("first"), Some(10));
        let chunk = |seqs: std::ops::RangeInclusive<u64>| {
            let records: Vec<(u64, String)> = seqs.map(|s| (s, format!("line{s}"))).collect();
            encode_chunk(&records)
        };
        store.db.insert(outbox_key(1), chunk(1..=3)).expect("insert");
        store.db.insert(outbox_key(4), chunk(4..=5)).expect("insert");
        let range = store.outbox_range(2, 4, 10).expect("range");
        assert_eq!(range.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(store.outbox_range(2, 5, 2).expect("range").len(), 2);
        assert_eq!(store.last_outbox_seq().expect("last"), Some(5));
        assert_eq!(store.first_outbox_seq().expect("first"), Some(1));
        // Only whole chunks are deleted (the count is of chunks).
        assert_eq!(store.remove_outbox_through(4).expect("gc"), 1);
        assert_eq!(store.first_outbox_seq().expect("first"), Some(4));
        assert_eq!(store.remove_outbox_through(5).expect("gc"), 1);
        assert_eq!(store.first_outbox_seq().expect("first"), None);
    }

    /// A customer state of format 2, as it was written.
    #[derive(Default, serde::Serialize)]
    struct V2<'a> {
        id: &'a str,
        profile: BTreeMap<String, crate::compile::bytecode::Value>,
        first_seen: Option<Millis>,
        clock: Millis,
        last_event: Option<Millis>,
        last_event_by_name: BTreeMap<String, Millis>,
        history: BTreeMap<String, Vec<Millis>>,
        sends: Vec<(Millis, String)>,
        segments: BTreeMap<String, bool>,
        enrollments: BTreeMap<String, crate::runtime::state::Enrollment>,
        entries: BTreeMap<String, crate::runtime::state::EntryHistory>,
        schedules: BTreeMap<String, Millis>,
        segment_check: Option<Millis>,
        message_ids: Vec<(Millis, String)>,
    }

    /// A format-2 record (the state without subscriptions and sends, then
    /// its chunk) reads back whole after the store is opened.
    #[test]
    fn a_format_2_store_is_upgraded_when_opened() {
        use std::collections::VecDeque;
        let old = V2 {
            id: "ann",
            profile: BTreeMap::from([("plan".into(), crate::compile::bytecode::Value::String("pro".into()))]),
            first_seen: Some(5),
            clock: 9,
            last_event: Some(9),
            last_event_by_name: BTreeMap::from([("paid".into(), 9)]),
            history: BTreeMap::from([("paid".into(), vec![9])]),
            sends: vec![(7, "welcome".into())],
            segments: BTreeMap::new(),
            enrollments: BTreeMap::new(),
            entries: BTreeMap::new(),
            schedules: BTreeMap::from([("weekly".into(), 1_000)]),
            segment_check: None,
            message_ids: vec![(9, "m1".into())],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            store.db.insert(META_FORMAT, &2u64.to_be_bytes()).expect("insert");
            let bytes = postcard::to_allocvec(&old).expect("encode");
            store
                .db
                .insert(customer_key("ann"), encode_customer(bytes, Some(42)))
                .expect("insert");
            store.flush().expect("flush");
        }
        let store = reopen(dir.path());
        let (state, chunk) = store.customer_record("ann").expect("read").expect("ann");
        assert_eq!(chunk, Some(42));
        let profile: BTreeMap<String, _> = state.profile.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        assert_eq!(profile, old.profile);
        let sends: VecDeque<(Millis, String)> = state.sends.iter().map(|(t, j)| (*t, j.to_string())).collect();
        assert_eq!(sends, VecDeque::from(old.sends.clone()));
        let schedules: BTreeMap<String, Millis> = state.schedules.iter().map(|(j, t)| (j.to_string(), *t)).collect();
        assert_eq!(schedules, old.schedules);
        assert_eq!(state.message_ids.len(), 1);
        assert!(state.subscriptions.is_empty() && state.sent.is_empty());
        assert_eq!(
            store.db.get(META_FORMAT).expect("get").map(|v| decode_u64(&v)),
            Some(STORE_FORMAT)
        );
    }

    /// A format-3 record (remembered sends without attribution) reads back
    /// whole, its sends with nothing engaged yet.
    #[test]
    fn a_format_3_store_is_upgraded_when_opened() {
        use crate::runtime::state::{Subscription, Suppression};
        use crate::syntax::ast::Channel;
        #[derive(serde::Serialize)]
        struct V3<'a> {
            v2: V2<'a>,
            subscriptions: BTreeMap<Channel, Subscription>,
            sent: Vec<(Millis, &'a str, &'a str, &'a str, Channel)>,
        }
        let subscription = Subscription {
            suppressed: Some(Suppression::Bounced),
            since: 8,
            send: Some("s0".into()),
        };
        let old = V3 {
            v2: V2 {
                id: "ann",
                clock: 9,
                sends: vec![(7, "welcome".into())],
                ..V2::default()
            },
            subscriptions: BTreeMap::from([(Channel::Sms, subscription.clone())]),
            sent: vec![(7, "s1", "onboard", "welcome", Channel::Email)],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            store.db.insert(META_FORMAT, &3u64.to_be_bytes()).expect("insert");
            let bytes = postcard::to_allocvec(&old).expect("encode");
            store
                .db
                .insert(customer_key("ann"), encode_customer(bytes, None))
                .expect("insert");
            store.flush().expect("flush");
        }
        let store = reopen(dir.path());
        let (state, chunk) = store.customer_record("ann").expect("read").expect("ann");
        assert_eq!(chunk, None);
        assert_eq!(state.clock, 9);
        assert_eq!(state.subscriptions, BTreeMap::from([(Channel::Sms, subscription)]));
        let sent = state.sent("s1").expect("the send is remembered");
        assert_eq!(
            (sent.journey.as_str(), sent.message.as_str(), sent.channel, sent.engaged),
            ("onboard", "welcome", Channel::Email, 0)
        );
        assert_eq!(
            store.db.get(META_FORMAT).expect("get").map(|v| decode_u64(&v)),
            Some(STORE_FORMAT)
        );
        // Opened again, it is not upgraded twice. (sled's flusher thread
        // may hold the directory's lock for a moment after the drop.)
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(store.customer("ann").expect("read").expect("ann"), state);
    }

    /// A format-4 record (remembered sends with attribution, no open goal
    /// windows) reads back whole, with an active enrollment and its sends,
    /// and no window of an ended one.
    #[test]
    fn a_format_4_store_is_upgraded_when_opened() {
        use crate::runtime::state::{Enrollment, Sent};
        use crate::syntax::ast::Channel;
        #[derive(serde::Serialize)]
        struct V4<'a> {
            v2: V2<'a>,
            subscriptions: BTreeMap<Channel, crate::runtime::state::Subscription>,
            sent: Vec<Sent>,
        }
        let enrollment = Enrollment {
            version: "v1".into(),
            entered_at: 5,
            ordinal: 1,
            pc: 2,
            suspended: true,
            wake_at: Some(86_400_005),
            loop_counters: Vec::new(),
            events: vec![BTreeMap::new()],
            goals_reached: vec![false],
            holdout: false,
            steps: 2,
        };
        let sent = Sent {
            at: 5,
            id: "s1".into(),
            journey: "onboard".into(),
            message: "welcome".into(),
            channel: Channel::Email,
            version: "v1".into(),
            pc: 1,
            arm: Some(("offer".into(), "a".into())),
            engaged: 2,
        };
        let old = V4 {
            v2: V2 {
                id: "ann",
                clock: 9,
                enrollments: BTreeMap::from([("onboard".into(), enrollment.clone())]),
                ..V2::default()
            },
            subscriptions: BTreeMap::new(),
            sent: vec![sent.clone()],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            store.db.insert(META_FORMAT, &4u64.to_be_bytes()).expect("insert");
            let bytes = postcard::to_allocvec(&old).expect("encode");
            store
                .db
                .insert(customer_key("ann"), encode_customer(bytes, Some(3)))
                .expect("insert");
            store.flush().expect("flush");
        }
        let store = reopen(dir.path());
        let (state, chunk) = store.customer_record("ann").expect("read").expect("ann");
        assert_eq!(chunk, Some(3));
        assert_eq!(state.clock, 9);
        assert_eq!(state.enrollments.get("onboard").map(|e| &**e), Some(&enrollment));
        assert_eq!(state.sent("s1"), Some(&sent));
        assert!(state.attributions.is_empty());
        assert_eq!(
            store.db.get(META_FORMAT).expect("get").map(|v| decode_u64(&v)),
            Some(STORE_FORMAT)
        );
        // Opened again, it is not upgraded twice. (sled's flusher thread
        // may hold the directory's lock for a moment after the drop.)
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(store.customer("ann").expect("read").expect("ann"), state);
    }

    /// A format-5 record (no incarnation) reads back whole with
    /// incarnation 0, and the upgraded store counts an erasure, so the
    /// profiles it makes from then on have an incarnation of their own.
    #[test]
    fn a_format_5_store_is_upgraded_when_opened() {
        use crate::runtime::state::Attribution;
        #[derive(serde::Serialize)]
        struct V5<'a> {
            v2: V2<'a>,
            subscriptions: BTreeMap<crate::syntax::ast::Channel, crate::runtime::state::Subscription>,
            sent: Vec<crate::runtime::state::Sent>,
            attributions: BTreeMap<String, Attribution>,
        }
        let attribution = Attribution {
            version: "v1".into(),
            entered_at: 5,
            until: 99,
            goals_reached: vec![false],
        };
        let old = V5 {
            v2: V2 {
                id: "ann",
                clock: 9,
                ..V2::default()
            },
            subscriptions: BTreeMap::new(),
            sent: Vec::new(),
            attributions: BTreeMap::from([("onboard".into(), attribution.clone())]),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            assert_eq!(
                store.counter(STAT_ERASURES).expect("counter"),
                0,
                "a new store erased no one"
            );
            store.db.insert(META_FORMAT, &5u64.to_be_bytes()).expect("insert");
            let bytes = postcard::to_allocvec(&old).expect("encode");
            store
                .db
                .insert(customer_key("ann"), encode_customer(bytes, None))
                .expect("insert");
            store.flush().expect("flush");
        }
        let store = reopen(dir.path());
        let state = store.customer("ann").expect("read").expect("ann");
        assert_eq!((state.clock, state.incarnation), (9, 0));
        assert_eq!(state.attributions.get("onboard"), Some(&attribution));
        assert_eq!(store.counter(STAT_ERASURES).expect("counter"), 1);
        assert_eq!(
            store.db.get(META_FORMAT).expect("get").map(|v| decode_u64(&v)),
            Some(STORE_FORMAT)
        );
    }

    /// A format-6 store (names as text in the customer records, no
    /// dictionary), written field by field as format 6 wrote a state, is
    /// rewritten with dictionary ids when opened: the states read back
    /// equal to what was written, the timer still lists the customer, and
    /// the interpreter goes on from there as it would have (the wake-up
    /// sends, a new event enrols in the other journey, a second record
    /// adds no name).
    #[test]
    fn a_format_6_store_is_upgraded_when_opened() {
        use crate::runtime::state::{Attribution, Subscription};
        use crate::runtime::{Engine, Input, Kind};
        use crate::syntax::ast::Channel;
        /// A remembered send of format 6.
        #[derive(serde::Serialize)]
        struct SentV6 {
            at: Millis,
            id: String,
            journey: String,
            message: String,
            channel: Channel,
            version: String,
            pc: u32,
            arm: Option<(String, String)>,
            engaged: u8,
        }
        /// A customer state of format 6, as it was written.
        #[derive(serde::Serialize)]
        struct V6<'a> {
            v2: V2<'a>,
            subscriptions: BTreeMap<Channel, Subscription>,
            sent: Vec<SentV6>,
            attributions: BTreeMap<String, Attribution>,
            incarnation: u64,
        }
        let text = |name: &crate::runtime::names::Name| name.to_string();
        fn by_text<V: Clone>(map: &NameMap<V>) -> BTreeMap<String, V> {
            map.iter()
                .map(|(name, value)| (name.to_string(), value.clone()))
                .collect()
        }
        let mut sources = crate::source::SourceMap::new();
        sources.add(
            "w.journey",
            "event signed_up\nevent paid\nmessage hello push { body \"hello\" }\n\
             message thanks push { body \"thanks\" }\nsegment payers = seen(paid within 30d)\n\
             journey onboard {\n  trigger signed_up\n  send hello\n  wait 1d\n  send hello\n}\n\
             journey upsell {\n  trigger entered payers\n  send thanks\n}\n",
        );
        let checked = crate::check::check_workspace(&sources, &crate::workspace::MemoryFiles::default())
            .checked
            .expect("the workspace checks");
        let engine = Engine::new(Arc::new(crate::compile::compile(&checked)));
        let track = |event: &str, at: Millis| Input::Track {
            event: event.into(),
            properties: BTreeMap::new(),
            at,
            message_id: None,
        };
        let mut state = CustomerState::new("ann");
        engine.apply(&mut state, &track("signed_up", 1_000)).expect("apply");
        state.set_subscription(
            Channel::Sms,
            Some(crate::runtime::state::Suppression::Bounced),
            1_000,
            None,
        );
        state.incarnation = 3;
        let due = state.next_wake().expect("waits a day");
        assert_eq!(state.sent.len(), 1, "the first hello is remembered");
        let old = V6 {
            v2: V2 {
                id: "ann",
                profile: by_text(&state.profile),
                first_seen: state.first_seen,
                clock: state.clock,
                last_event: state.last_event,
                last_event_by_name: by_text(&state.last_event_by_name),
                history: state
                    .history
                    .iter()
                    .map(|(n, t)| (n.to_string(), t.iter().copied().collect()))
                    .collect(),
                sends: state.sends.iter().map(|(t, j)| (*t, text(j))).collect(),
                segments: by_text(&state.segments),
                enrollments: state
                    .enrollments
                    .iter()
                    .map(|(n, e)| (n.to_string(), (**e).clone()))
                    .collect(),
                entries: by_text(&state.entries),
                schedules: by_text(&state.schedules),
                segment_check: state.segment_check,
                message_ids: Vec::new(),
            },
            subscriptions: state.subscriptions.clone(),
            sent: (state.sent.iter())
                .map(|sent| SentV6 {
                    at: sent.at,
                    id: sent.id.clone(),
                    journey: text(&sent.journey),
                    message: text(&sent.message),
                    channel: sent.channel,
                    version: sent.version.to_string(),
                    pc: sent.pc,
                    arm: sent.arm.clone(),
                    engaged: sent.engaged,
                })
                .collect(),
            attributions: by_text(&state.attributions),
            incarnation: 3,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            store.db.insert(META_FORMAT, &6u64.to_be_bytes()).expect("insert");
            let bytes = postcard::to_allocvec(&old).expect("encode");
            assert!(String::from_utf8_lossy(&bytes).contains("onboard"), "names as text");
            store
                .db
                .insert(customer_key("ann"), encode_customer(bytes, Some(11)))
                .expect("insert");
            store
                .db
                .insert(timer_chunk_key(due, 11), encode_timer_chunk(&["ann".to_string()]))
                .expect("insert");
            store.flush().expect("flush");
        }
        let store = reopen(dir.path());
        assert_eq!(
            store.db.get(META_FORMAT).expect("get").map(|v| decode_u64(&v)),
            Some(STORE_FORMAT)
        );
        let (mut read, chunk) = store.customer_record("ann").expect("read").expect("ann");
        assert_eq!((&read, chunk), (&state, Some(11)));
        let record = store.db.get(customer_key("ann")).expect("get").expect("ann");
        assert!(!String::from_utf8_lossy(&record).contains("onboard"), "names as ids");
        let names: Vec<String> = (store.db.scan_prefix([PREFIX_NAME]))
            .map(|item| String::from_utf8(item.expect("name").1.to_vec()).expect("UTF-8"))
            .collect();
        for name in ["onboard", "signed_up", "hello"] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        let timers = store.due_timers_after(None, due, 10).expect("due");
        assert_eq!(timers.len(), 1);
        assert_eq!(
            (timers[0].due, timers[0].chunk, &timers[0].customers[..]),
            (due, Some(11), &["ann".to_string()][..])
        );
        // The wake-up and a later event do on the upgraded state what they
        // do on the state as it was.
        let mut reference = state.clone();
        for input in [Input::Wake { at: due }, track("paid", due + 5)] {
            let effects = engine.apply(&mut read, &input).expect("apply");
            assert_eq!(effects, engine.apply(&mut reference, &input).expect("apply"));
            assert!(effects.records.iter().any(|r| r.kind == Kind::Send), "{effects:?}");
        }
        assert_eq!(read, reference);
        assert!(read.enrollments.contains_key("upsell") || read.entries.contains_key("upsell"));
        store.put_customer(&read, None).expect("write");
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(store.customer("ann").expect("read"), Some(read));
    }

    /// Opens a store just closed, waiting for sled to let go of its lock.
    fn reopen(dir: &Path) -> Store {
        (0..100)
            .find_map(|_| {
                Store::open(dir, &StoreOptions::default())
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("reopen")
    }

    #[test]
    fn a_store_marked_with_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            store.mark_format().expect("mark");
            store.flush().expect("flush");
        }
        {
            let store = reopen(dir.path());
            store
                .db
                .insert(META_FORMAT, &(STORE_FORMAT + 1).to_be_bytes())
                .expect("insert");
            store.flush().expect("flush");
        }
        let error = Store::open(dir.path(), &StoreOptions::default())
            .err()
            .expect("refused");
        assert!(error.to_string().contains("newer journeyc"), "{error}");
    }
}
