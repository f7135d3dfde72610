//! The durable store: one sled tree, records told apart by a one-byte key prefix.
//!
//! One tree because a [`sled::Batch`] is atomic only within a tree: a customer's
//! new state, its timer index entry, its outbox entries and the stats counters
//! it changed are written by one batch, so after a crash either all of them are
//! there or none.
//!
//! | prefix | key after the prefix                 | value                                 |
//! |--------|--------------------------------------|---------------------------------------|
//! | `c`    | customer id                          | postcard [`CustomerState`]            |
//! | `t`    | due ms (order-preserving u64 BE) + customer id | empty: the timer index      |
//! | `o`    | first outbox sequence number of the chunk (u64 BE) | postcard `Vec<(seq, JSON line)>`: one chunk per group commit |
//! | `k`    | sink name                            | last sequence number delivered (u64 BE)|
//! | `d`    | sink name + `0x00` + sequence (u64 BE) | dead letter: JSON with the error    |
//! | `s`    | counter name (`j/JOURNEY/…`, `g/…`)  | i64 BE                                |
//! | `a`    | customer id + `0x00` + journey       | split arm chosen (`split/arm`), for stats |
//! | `b`    | bundle key (hex SHA-256 of its postcard bytes) | postcard [`Bundle`]         |
//! | `m`    | `seq` / `current`                    | next outbox sequence / current bundle key |
//!
//! **Invariant:** for every customer record `c/ID` whose state has a
//! `next_wake()` of `Some(at)` there is exactly one timer key `t/at/ID`, and no
//! other timer key names that customer. Only the commit thread writes `c`, `t`,
//! `o`, `s`, `a`, `m`; sinks write `k`, `d` and delete delivered `o` entries.

use crate::compile::bytecode::Bundle;
use crate::runtime::{CustomerState, Millis};
use sha2::{Digest, Sha256};
use std::path::Path;

pub const PREFIX_CUSTOMER: u8 = b'c';
pub const PREFIX_TIMER: u8 = b't';
pub const PREFIX_OUTBOX: u8 = b'o';
pub const PREFIX_CURSOR: u8 = b'k';
pub const PREFIX_DEAD: u8 = b'd';
pub const PREFIX_STAT: u8 = b's';
pub const PREFIX_ARM: u8 = b'a';
pub const PREFIX_BUNDLE: u8 = b'b';
pub const PREFIX_META: u8 = b'm';

pub const META_SEQ: &[u8] = b"mseq";
pub const META_CURRENT: &[u8] = b"mcurrent";

/// Counter: number of keys in the timer index.
pub const STAT_TIMERS: &str = "g/timers";

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record under key {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Settings of the sled database.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        // sled's page cache; the default (1 GiB) is far above what a small
        // daemon should hold, and RSS is one of our budgets. 16 MiB keeps
        // 1M waiting enrollments under 300 MB and ran the bench no slower
        // than 32 or 64 MiB (docs/performance.md, "Daemon").
        StoreOptions {
            cache_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The sled database with typed accessors. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub db: sled::Db,
}

impl Store {
    pub fn open(dir: &Path, options: &StoreOptions) -> StoreResult<Store> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(1000))
            .open()?;
        Ok(Store { db })
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> StoreResult<()> {
        self.db.flush()?;
        Ok(())
    }

    pub fn customer(&self, id: &str) -> StoreResult<Option<CustomerState>> {
        let key = customer_key(id);
        match self.db.get(&key)? {
            None => Ok(None),
            Some(bytes) => decode_state(&key, &bytes).map(Some),
        }
    }

    pub fn counter(&self, name: &str) -> StoreResult<i64> {
        Ok(self.db.get(stat_key(name))?.map(|v| decode_i64(&v)).unwrap_or(0))
    }

    /// Every stats counter.
    pub fn counters(&self) -> StoreResult<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([PREFIX_STAT]) {
            let (key, value) = item?;
            out.push((String::from_utf8_lossy(&key[1..]).into_owned(), decode_i64(&value)));
        }
        Ok(out)
    }

    /// Timer keys due at or before `now`, oldest first, at most `limit`.
    pub fn due_timers(&self, now: Millis, limit: usize) -> StoreResult<Vec<(Millis, String)>> {
        self.due_timers_after(None, now, limit)
    }

    /// Like [`Store::due_timers`], starting after the timer `after`.
    pub fn due_timers_after(
        &self,
        after: Option<&(Millis, String)>,
        now: Millis,
        limit: usize,
    ) -> StoreResult<Vec<(Millis, String)>> {
        use std::ops::Bound;
        let mut end = vec![PREFIX_TIMER];
        end.extend_from_slice(&encode_time(now.saturating_add(1)));
        let start = match after {
            Some((at, customer)) => Bound::Excluded(timer_key(*at, customer)),
            None => Bound::Included(vec![PREFIX_TIMER]),
        };
        let mut out = Vec::new();
        for item in self.db.range::<Vec<u8>, _>((start, Bound::Excluded(end))).take(limit) {
            let (key, _) = item?;
            out.push(decode_timer_key(&key)?);
        }
        Ok(out)
    }

    /// The earliest timer, if any.
    pub fn first_timer(&self) -> StoreResult<Option<(Millis, String)>> {
        match self.db.scan_prefix([PREFIX_TIMER]).next() {
            None => Ok(None),
            Some(item) => Ok(Some(decode_timer_key(&item?.0)?)),
        }
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
            for (seq, line) in decode_chunk(&key, &value)? {
                if seq >= from && seq <= to {
                    out.push((seq, line));
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
                Ok(decode_chunk(&key, &value)?.last().map(|(seq, _)| *seq))
            }
        }
    }

    pub fn first_outbox_seq(&self) -> StoreResult<Option<u64>> {
        match self.db.scan_prefix([PREFIX_OUTBOX]).next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                Ok(decode_chunk(&key, &value)?.first().map(|(seq, _)| *seq))
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

    pub fn cursor(&self, sink: &str) -> StoreResult<Option<u64>> {
        Ok(self.db.get(cursor_key(sink))?.map(|v| decode_u64(&v)))
    }

    pub fn set_cursor(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.db.insert(cursor_key(sink), &seq.to_be_bytes())?;
        Ok(())
    }

    /// Deletes outbox chunks whose records all have a sequence number up to
    /// `seq` (every sink has them).
    pub fn remove_outbox_through(&self, seq: u64) -> StoreResult<usize> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        let mut previous: Option<sled::IVec> = None;
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
                if decode_chunk(&previous, &value)?
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

    fn finish_removal(&self, batch: sled::Batch, removed: usize) -> StoreResult<usize> {
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

    pub fn arm(&self, customer: &str, journey: &str) -> StoreResult<Option<String>> {
        Ok(self
            .db
            .get(arm_key(customer, journey))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
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
            let bundle: Bundle = postcard::from_bytes(&value).map_err(|e| StoreError::Corrupt {
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

/// Maps i64 milliseconds to bytes whose lexicographic order is numeric order.
pub fn encode_time(at: Millis) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_time(bytes: &[u8]) -> Millis {
    (decode_u64(bytes) ^ (1 << 63)) as i64
}

pub fn timer_key(at: Millis, customer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + customer.len());
    key.push(PREFIX_TIMER);
    key.extend_from_slice(&encode_time(at));
    key.extend_from_slice(customer.as_bytes());
    key
}

pub fn decode_timer_key(key: &[u8]) -> StoreResult<(Millis, String)> {
    if key.len() < 9 || key[0] != PREFIX_TIMER {
        return Err(StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "not a timer key".into(),
        });
    }
    Ok((decode_time(&key[1..9]), String::from_utf8_lossy(&key[9..]).into_owned()))
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

pub fn decode_chunk(key: &[u8], bytes: &[u8]) -> StoreResult<Vec<(u64, String)>> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

pub fn cursor_key(sink: &str) -> Vec<u8> {
    [&[PREFIX_CURSOR][..], sink.as_bytes()].concat()
}

pub fn dead_key(sink: &str, seq: u64) -> Vec<u8> {
    [&[PREFIX_DEAD][..], sink.as_bytes(), &[0], &seq.to_be_bytes()].concat()
}

pub fn stat_key(name: &str) -> Vec<u8> {
    [&[PREFIX_STAT][..], name.as_bytes()].concat()
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

pub fn encode_state(state: &CustomerState) -> Vec<u8> {
    postcard::to_allocvec(state).expect("a customer state always serializes")
}

pub fn decode_state(key: &[u8], bytes: &[u8]) -> StoreResult<CustomerState> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
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
        let b = timer_key(2_000, "abe");
        assert!(a < b);
        assert_eq!(decode_timer_key(&a).expect("timer key"), (1_000, "zed".to_string()));
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
        assert_eq!(store.first_timer().expect("first"), Some((10, "a".to_string())));
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
}
