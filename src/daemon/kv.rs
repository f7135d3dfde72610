//! The ordered key-value contract under [`super::store::Store`], and its
//! backends.
//!
//! Every record of the daemon is a byte key with a byte value in one ordered
//! key space (the layout is in `store.rs`). What the daemon needs from a
//! backend is small: point reads (also many in one call, [`Kv::get_many`]:
//! one query on PostgreSQL) and writes, ordered scans of a prefix or a
//! range in both directions, one atomic [`Batch`] of writes, a
//! compare-and-write ([`Kv::apply_if`]), a counter of unique ids, and a
//! flush after which whatever was applied before it is durable. Two
//! backends keep that contract:
//!
//! - sled (the default, a directory under `--data`): a batch is one
//!   `sled::Batch` on the one tree; durable at the next flush.
//! - PostgreSQL (`--store postgres://…`, `kv/pg.rs`): a batch is one
//!   transaction; durable when it commits, so a flush has nothing left to do.
//!
//! The enum (not a trait object) keeps calls on sled as direct as before:
//! the daemon's hot path pays one match per call.

use super::store::{StoreError, StoreResult};
use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};

pub mod pg;

/// Bytes of a key or value: sled's cheaply cloned buffer, which every
/// backend hands out.
pub type Bytes = sled::IVec;

/// The store's key-value backend. Cheap to clone.
#[derive(Clone)]
pub enum Kv {
    Sled(sled::Db),
    Postgres(pg::Pg),
}

/// Writes applied atomically by [`Kv::apply_batch`]: all or none after a
/// crash. A later write of a key replaces an earlier one in the same batch.
#[derive(Default, Debug, Clone)]
pub struct Batch {
    writes: BTreeMap<Bytes, Option<Bytes>>,
}

impl Batch {
    pub fn insert<K: Into<Bytes>, V: Into<Bytes>>(&mut self, key: K, value: V) {
        self.writes.insert(key.into(), Some(value.into()));
    }

    pub fn remove<K: Into<Bytes>>(&mut self, key: K) {
        self.writes.insert(key.into(), None);
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes in key order (`None`: a removal).
    pub fn writes(&self) -> impl Iterator<Item = (&Bytes, &Option<Bytes>)> {
        self.writes.iter()
    }

    fn into_sled(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in self.writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }
}

fn owned(bound: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(key) => Bound::Included(key.to_vec()),
        Bound::Excluded(key) => Bound::Excluded(key.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The first key after every key that starts with `prefix` (`None`: no such
/// key, the prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Kv {
    /// Opens sled under `dir`, or the PostgreSQL database of
    /// `options.postgres` (as owner or standby, see [`pg::Pg::open`]).
    pub fn open(dir: &std::path::Path, options: &super::store::StoreOptions) -> StoreResult<Kv> {
        Ok(match &options.postgres {
            Some(url) => Kv::Postgres(pg::Pg::open_as(url, options.lease, options.spread)?),
            None => Kv::Sled(
                sled::Config::new()
                    .path(dir)
                    .cache_capacity(options.cache_bytes)
                    .mode(sled::Mode::HighThroughput)
                    .flush_every_ms(Some(1000))
                    .open()?,
            ),
        })
    }

    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> StoreResult<Option<Bytes>> {
        match self {
            Kv::Sled(db) => Ok(db.get(key)?),
            Kv::Postgres(pg) => pg.get(key.as_ref()),
        }
    }

    /// The values of `keys`, in their order (`None`: absent). On
    /// PostgreSQL one query whatever the number of keys; on sled a get
    /// each.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> StoreResult<Vec<Option<Bytes>>> {
        match self {
            Kv::Sled(db) => keys.iter().map(|key| Ok(db.get(key)?)).collect(),
            Kv::Postgres(pg) => pg.get_many(&keys.iter().map(AsRef::as_ref).collect::<Vec<_>>()),
        }
    }

    pub fn contains_key<K: AsRef<[u8]>>(&self, key: K) -> StoreResult<bool> {
        Ok(self.get(key)?.is_some())
    }

    pub fn insert<K: AsRef<[u8]>, V: Into<Bytes>>(&self, key: K, value: V) -> StoreResult<()> {
        match self {
            Kv::Sled(db) => {
                db.insert(key, value)?;
                Ok(())
            }
            Kv::Postgres(_) => {
                let mut batch = Batch::default();
                batch.insert(key.as_ref(), value);
                self.apply_batch(batch)
            }
        }
    }

    pub fn remove<K: AsRef<[u8]>>(&self, key: K) -> StoreResult<()> {
        match self {
            Kv::Sled(db) => {
                db.remove(key)?;
                Ok(())
            }
            Kv::Postgres(_) => {
                let mut batch = Batch::default();
                batch.remove(key.as_ref());
                self.apply_batch(batch)
            }
        }
    }

    /// Applies every write of `batch` atomically.
    pub fn apply_batch(&self, batch: Batch) -> StoreResult<()> {
        match self {
            Kv::Sled(db) => Ok(db.apply_batch(batch.into_sled())?),
            Kv::Postgres(pg) => pg.apply(None, batch).map(|_| ()),
        }
    }

    /// [`Kv::apply_batch`], on PostgreSQL fenced at the epochs of `held`
    /// (`None`: those held now; [`pg::Pg::apply_held`]). sled has one
    /// writer and no partition leases: the same as [`Kv::apply_batch`].
    pub fn apply_batch_held(&self, batch: Batch, held: Option<&pg::Owned>) -> StoreResult<()> {
        match (self, held) {
            (Kv::Postgres(pg), Some(held)) => pg.apply_held(held, batch),
            _ => self.apply_batch(batch),
        }
    }

    /// Applies `batch` atomically if `key` still holds `expected`, and says
    /// whether it did.
    pub fn apply_if(&self, key: &[u8], expected: &[u8], batch: Batch) -> StoreResult<bool> {
        match self {
            Kv::Sled(db) => {
                let batch = batch.into_sled();
                db.transaction(|tx| -> sled::transaction::ConflictableTransactionResult<bool> {
                    if tx.get(key)?.as_deref() != Some(expected) {
                        return Ok(false);
                    }
                    tx.apply_batch(&batch)?;
                    Ok(true)
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Abort(()) => unreachable!("nothing aborts"),
                    sled::transaction::TransactionError::Storage(e) => StoreError::from(e),
                })
            }
            Kv::Postgres(pg) => pg.apply(Some((key, expected)), batch),
        }
    }

    /// Replaces (or with `None` removes) the value of `key` if it still is
    /// `expected`, and says whether it did.
    pub fn compare_and_swap<V: Into<Bytes>>(&self, key: &[u8], expected: &[u8], new: Option<V>) -> StoreResult<bool> {
        let mut batch = Batch::default();
        match new {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
        self.apply_if(key, expected, batch)
    }

    /// A unique id, larger than every one handed out before (also across
    /// restarts).
    pub fn generate_id(&self) -> StoreResult<u64> {
        match self {
            Kv::Sled(db) => Ok(db.generate_id()?),
            Kv::Postgres(pg) => pg.generate_id(),
        }
    }

    /// Makes every write applied before the call durable.
    pub fn flush(&self) -> StoreResult<()> {
        match self {
            Kv::Sled(db) => {
                db.flush()?;
                Ok(())
            }
            // Each batch was durable when its transaction committed.
            Kv::Postgres(_) => Ok(()),
        }
    }

    /// [`Kv::flush`] without blocking the caller's task.
    pub async fn flush_async(&self) -> StoreResult<()> {
        match self {
            Kv::Sled(db) => {
                db.flush_async().await?;
                Ok(())
            }
            Kv::Postgres(_) => Ok(()),
        }
    }

    /// Every record, in key order.
    pub fn iter(&self) -> Iter {
        self.range::<&[u8], _>(..)
    }

    /// The records whose keys start with `prefix`, in key order.
    pub fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> Iter {
        match self {
            Kv::Sled(db) => Iter::Sled(db.scan_prefix(prefix)),
            Kv::Postgres(_) => {
                let prefix = prefix.as_ref();
                let end = match prefix_end(prefix) {
                    Some(end) => Bound::Excluded(end),
                    None => Bound::Unbounded,
                };
                self.range_owned(Bound::Included(prefix.to_vec()), end)
            }
        }
    }

    /// How many records have keys starting with `prefix`: on PostgreSQL one
    /// `count(*)` over the key index (no value leaves the server), on sled
    /// a walk of the keys.
    pub fn count_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> StoreResult<usize> {
        match self {
            Kv::Sled(db) => {
                let mut count = 0;
                for key in db.scan_prefix(prefix).keys() {
                    key?;
                    count += 1;
                }
                Ok(count)
            }
            Kv::Postgres(pg) => pg.count_prefix(prefix.as_ref()),
        }
    }

    /// The records with keys in `range`, in key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match self {
            Kv::Sled(db) => Iter::Sled(db.range(range)),
            Kv::Postgres(_) => self.range_owned(
                owned(range.start_bound().map(AsRef::as_ref)),
                owned(range.end_bound().map(AsRef::as_ref)),
            ),
        }
    }

    /// [`Kv::range`] of the records this node works on: on sled all of
    /// them; on PostgreSQL those in the partitions it holds now
    /// ([`pg::Pg::scan_owned`]).
    pub fn range_of_held<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match self {
            Kv::Sled(db) => Iter::Sled(db.range(range)),
            Kv::Postgres(pg) => Iter::Postgres(pg.scan_owned(
                owned(range.start_bound().map(AsRef::as_ref)),
                owned(range.end_bound().map(AsRef::as_ref)),
            )),
        }
    }

    fn range_owned(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Iter {
        match self {
            Kv::Sled(db) => Iter::Sled(db.range((start, end))),
            Kv::Postgres(pg) => Iter::Postgres(pg.scan(start, end)),
        }
    }
}

/// An ordered scan, from either end.
pub enum Iter {
    Sled(sled::Iter),
    Postgres(pg::Scan),
}

impl Iter {
    pub fn keys(self) -> impl DoubleEndedIterator<Item = StoreResult<Bytes>> {
        self.map(|item| item.map(|(key, _)| key))
    }

    pub fn values(self) -> impl DoubleEndedIterator<Item = StoreResult<Bytes>> {
        self.map(|item| item.map(|(_, value)| value))
    }
}

impl Iterator for Iter {
    type Item = StoreResult<(Bytes, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(iter) => iter.next().map(|item| item.map_err(StoreError::from)),
            Iter::Postgres(scan) => scan.next(),
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(iter) => iter.next_back().map(|item| item.map_err(StoreError::from)),
            Iter::Postgres(scan) => scan.next_back(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_keys_are_read_in_their_order_absent_ones_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = Kv::Sled(sled::open(dir.path()).expect("open"));
        kv.insert(b"ca", &b"1"[..]).expect("insert");
        kv.insert(b"cb", &b"2"[..]).expect("insert");
        let values = kv.get_many(&[&b"cb"[..], b"cz", b"ca", b"cb"]).expect("get_many");
        let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
        assert_eq!(values, vec![Some(&b"2"[..]), None, Some(b"1"), Some(b"2")]);
        assert!(kv.get_many::<&[u8]>(&[]).expect("none").is_empty());
    }

    /// The count of a prefix is the number of records its scan gives,
    /// also for the last prefix byte (no end bound).
    #[test]
    fn a_prefix_counts_the_records_its_scan_gives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = Kv::Sled(sled::open(dir.path()).expect("open"));
        for key in [&b"q"[..], b"r1", b"r2", b"r\xff", b"s", b"\xff", b"\xff\xff"] {
            kv.insert(key, &b"v"[..]).expect("insert");
        }
        for prefix in [&b"r"[..], b"q", b"x", b"\xff", b""] {
            assert_eq!(
                kv.count_prefix(prefix).expect("count"),
                kv.scan_prefix(prefix).count(),
                "{prefix:?}"
            );
        }
        assert_eq!(kv.count_prefix(b"r").expect("count"), 3);
    }

    #[test]
    fn the_end_of_a_prefix_is_the_next_key_after_all_it_starts() {
        assert_eq!(prefix_end(b"c"), Some(b"d".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
