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
//!
//! **Durability.** A batch is one transaction: when [`Pg::apply`] returns,
//! it has committed (PostgreSQL's `synchronous_commit` decides what that
//! means on disk; its default waits for the WAL flush).
//!
//! **One daemon per database (for now).** The store holds a session-level
//! advisory lock on a connection of its own while open, so a second daemon
//! on the same database is refused at start, as a second one on a sled
//! directory is. Leases and epochs for several daemons are the next layer
//! (`docs/scale-out.md`).

use super::{Batch, Bytes};
use crate::daemon::store::{StoreError, StoreResult};
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

/// Partitions of a new database.
pub const PARTITIONS_DEFAULT: i32 = 256;
/// The partition of records that name no customer (timers, outbox, sinks'
/// cursors, counters, bundles, metadata, refusals by id, broadcasts).
pub const PARTITION_NONE: i32 = -1;
/// Records fetched per round trip by a scan.
const SCAN_PAGE: i64 = 512;
/// The advisory lock a daemon holds on its database (`"journeyc"` in ASCII).
const LOCK_DAEMON: i64 = 0x6a6f_7572_6e65_7963;
/// Tries of the daemon's lock, 100 ms apart, before a start is refused.
const LOCK_TRIES: usize = 50;
/// The advisory lock under which migrations run.
const LOCK_MIGRATE: i64 = LOCK_DAEMON + 1;

/// The schema, one step per version, applied in order and never edited
/// once released (a change is a new step).
pub const MIGRATIONS: &[(i32, &str)] = &[(
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
)];

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
/// modulo `partitions`; [`PARTITION_NONE`] when it names none.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
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

struct Inner {
    pool: deadpool_postgres::Pool,
    handle: tokio::runtime::Handle,
    partitions: i32,
    /// The connection holding [`LOCK_DAEMON`], kept out of the pool.
    _lock: Option<deadpool_postgres::Object>,
    /// Dropped with the store: stops the runtime's thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A handle on the database. Cheap to clone.
#[derive(Clone)]
pub struct Pg {
    inner: Arc<Inner>,
}

impl Pg {
    /// Connects to `url` (`postgres://user@host:port/db`), applies the
    /// migrations, reads (or at the first start writes) the partition count
    /// and takes the daemon's lock.
    pub fn open(url: &str) -> StoreResult<Pg> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| error("the PostgreSQL URL", e))?;
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
            config,
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
        let (partitions, lock) = block(&handle, {
            let pool = pool.clone();
            async move { start(&pool).await }
        })??;
        Ok(Pg {
            inner: Arc::new(Inner {
                pool,
                handle,
                partitions,
                _lock: Some(lock),
                _stop: stop,
            }),
        })
    }

    /// The number of partitions, fixed at the database's first start.
    pub fn partitions(&self) -> i32 {
        self.inner.partitions
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

    /// Applies `batch` in one transaction; with `condition` `(key,
    /// expected)`, only if `key` holds `expected` then (the row locked
    /// until the commit). Answers whether it applied.
    pub fn apply(&self, condition: Option<(&[u8], &[u8])>, batch: Batch) -> StoreResult<bool> {
        let condition = condition.map(|(key, expected)| (key.to_vec(), expected.to_vec()));
        self.run(|pool, partitions| async move {
            let mut client = connection(&pool).await?;
            let tx = client.transaction().await.map_err(|e| error("begin", e))?;
            if let Some((key, expected)) = condition {
                let row = tx
                    .query_opt(
                        "SELECT value FROM journeyc_kv WHERE partition = $1 AND key = $2 FOR UPDATE",
                        &[&partition_of(&key, partitions), &key],
                    )
                    .await
                    .map_err(|e| error("compare", e))?;
                if row.map(|row| row.get::<_, Vec<u8>>(0)) != Some(expected) {
                    return Ok(false);
                }
            }
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
            tx.commit().await.map_err(|e| error("commit", e))?;
            Ok(true)
        })
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

    /// Rewrites the table without the old versions of changed and deleted
    /// rows (erasure: `VACUUM FULL`, which cannot run inside a transaction).
    pub fn compact(&self) -> StoreResult<()> {
        self.run(|pool, _| async move {
            let client = connection(&pool).await?;
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
            front: VecDeque::new(),
            back: VecDeque::new(),
            done: false,
        }
    }

    /// One page of keys strictly inside the bounds, ascending or descending.
    fn page(&self, start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>, descending: bool) -> StoreResult<Vec<(Bytes, Bytes)>> {
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
            let order = if descending { "DESC" } else { "ASC" };
            sql.push_str(&format!(" ORDER BY key {order} LIMIT {SCAN_PAGE}"));
            let statement = client.prepare_cached(&sql).await.map_err(|e| error("scan", e))?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
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

/// Migrates, settles the partition count and takes the daemon's lock.
async fn start(pool: &deadpool_postgres::Pool) -> StoreResult<(i32, deadpool_postgres::Object)> {
    let lock = connection(pool).await?;
    // A daemon that just exited holds the lock until the server has seen
    // its connection close: wait a moment before refusing.
    let mut locked = false;
    for _ in 0..LOCK_TRIES {
        locked = lock
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_DAEMON])
            .await
            .map_err(|e| error("lock", e))?
            .get(0);
        if locked {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if !locked {
        return Err(StoreError::Postgres(
            "another journeyc daemon is running on this database (it holds the daemon's advisory lock)".into(),
        ));
    }
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
    let applied: Option<i32> = tx
        .query_one("SELECT max(version) FROM journeyc_migrations", &[])
        .await
        .map_err(|e| error("migrations", e))?
        .get(0);
    let applied = applied.unwrap_or(0);
    let newest = MIGRATIONS.last().map(|(version, _)| *version).unwrap_or(0);
    if applied > newest {
        return Err(StoreError::Postgres(format!(
            "this database was migrated by a newer journeyc (schema version {applied}; this build knows up to \
             {newest})"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
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
    tx.commit().await.map_err(|e| error("commit", e))?;
    let partitions = i32::try_from(partitions)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| StoreError::Postgres(format!("journeyc_settings: {partitions} partitions")))?;
    Ok((partitions, lock))
}

/// A scan of [`Pg::scan`]: pages from the front ascend, pages from the back
/// descend, and neither passes a key the other end already returned.
pub struct Scan {
    pg: Pg,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
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
            match self.pg.page(&self.start, &self.end, from_back) {
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
}
