//! Dead letters: sends a sink gave up on, kept under `d/SINK 0 SEQ` with the
//! record itself, so they can be listed (`GET /v1/outbox/dead`), counted
//! (`journeyc_outbox_dead_letters`) and queued for another try
//! (`POST /v1/outbox/retry`, `journeyc outbox retry`), which delivers the
//! same record again: same send id, same `webhook-id`, same body.
//!
//! A letter is JSON: `{sink, seq, id, reason, attempts, error, at, record}`
//! and `requeued: true` until its sink takes it back. The sink loop moves
//! the requeued letters of its own sink into its retry set
//! ([`super::retry`]), in one transaction, where they are tried again; one
//! that fails again is parked again with the attempts added up.
//!
//! Every change after the letter is written is a compare-and-swap against
//! the bytes last read, so an erasure of the customer (which removes its
//! letters in the erase batch, `CommitThread::erase_outside_group`) is never
//! undone by a retry that raced it. At most [`DEAD_LETTERS_MAX`] letters are
//! kept; parking one more removes the oldest (lowest sequence number),
//! counted in `journeyc_dead_letters_dropped_total` and logged.

use super::store::{dead_key, Store, StoreError, StoreResult, PREFIX_DEAD};
use serde_json::{json, Value};

/// The most dead letters the store keeps, over all sinks.
pub const DEAD_LETTERS_MAX: usize = 10_000;

/// Why a sink gave up on a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Every attempt failed (network, TLS, 5xx, 408, 429).
    AttemptsExhausted,
    /// The receiver answered a 4xx that retrying will not change.
    Refused,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AttemptsExhausted => "attempts_exhausted",
            Reason::Refused => "refused",
        }
    }
}

/// What a sink knows of a send it gave up on.
pub struct Failure<'a> {
    pub sink: &'a str,
    pub seq: u64,
    pub record: &'a Value,
    pub reason: Reason,
    pub error: &'a str,
    pub attempts: u32,
}

impl Failure<'_> {
    fn letter(&self) -> Value {
        json!({
            "sink": self.sink,
            "seq": self.seq,
            "id": self.record.get("id").cloned().unwrap_or(Value::Null),
            "reason": self.reason.as_str(),
            "attempts": self.attempts,
            "error": self.error,
            "at": now_text(),
            "record": self.record,
        })
    }
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parks a send as a dead letter, keeping the store's bound with at most
/// `max` letters; answers how many old letters were removed for it.
pub fn park(store: &Store, failure: &Failure, max: usize) -> StoreResult<usize> {
    let mut dropped = 0;
    let mut keys: Vec<crate::daemon::kv::Bytes> = Vec::new();
    // On PostgreSQL the letters this node may remove: those of the
    // partitions it holds.
    for item in store.db.range_of_held(vec![PREFIX_DEAD]..vec![PREFIX_DEAD + 1]).keys() {
        keys.push(item?);
    }
    let key = dead_key(failure.sink, failure.seq);
    if !keys.iter().any(|k| k.as_ref() == key.as_slice()) {
        // Oldest first: by sequence number, the last 8 bytes of the key.
        keys.sort_by_key(|k| seq_of_key(k));
        while keys.len() - dropped >= max.max(1) {
            let oldest = &keys[dropped];
            store.db.remove(oldest)?;
            tracing::warn!(
                seq = seq_of_key(oldest),
                "dead letter removed: the store keeps at most {max}"
            );
            dropped += 1;
        }
    }
    store.add_dead_letter(failure.sink, failure.seq, &failure.letter())?;
    Ok(dropped)
}

fn seq_of_key(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|start| key[start..].try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// How many dead letters the store holds.
pub fn count(store: &Store) -> usize {
    store.db.scan_prefix([PREFIX_DEAD]).keys().filter(Result::is_ok).count()
}

/// The letters as the API shows them, oldest sink key first, at most `limit`.
pub fn list(store: &Store, limit: usize) -> StoreResult<Vec<Value>> {
    Ok(store.dead_letters(limit)?.iter().map(view).collect())
}

/// One letter as the API shows it. Letters parked by earlier versions have
/// no `id`, `reason` or `at`; the id is then the record's.
pub fn view(letter: &Value) -> Value {
    let record = letter.get("record").cloned().unwrap_or(Value::Null);
    let field = |name: &str| record.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "sink": letter.get("sink"),
        "seq": letter.get("seq"),
        "id": letter.get("id").filter(|id| !id.is_null()).cloned().unwrap_or_else(|| field("id")),
        "customer": field("customer"),
        "journey": field("journey"),
        "message": field("message"),
        "channel": field("channel"),
        "reason": letter.get("reason").cloned().unwrap_or_else(|| json!(Reason::AttemptsExhausted.as_str())),
        "attempts": letter.get("attempts"),
        "last_error": letter.get("error"),
        "at": letter.get("at"),
        "requeued": letter.get("requeued").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Queues dead letters for another try: all of them, or those whose `seq`
/// is listed (in any sink). Answers how many were queued and which of the
/// listed sequence numbers had no letter.
pub fn requeue(store: &Store, only: Option<&[u64]>) -> StoreResult<(usize, Vec<u64>)> {
    let mut queued = 0;
    let mut found = std::collections::BTreeSet::new();
    for item in store.db.scan_prefix([PREFIX_DEAD]) {
        let (key, value) = item?;
        let seq = seq_of_key(&key);
        if only.is_some_and(|seqs| !seqs.contains(&seq)) {
            continue;
        }
        found.insert(seq);
        let Ok(mut letter) = serde_json::from_slice::<Value>(&value) else {
            continue;
        };
        if letter.get("requeued").and_then(Value::as_bool) == Some(true) {
            queued += 1;
            continue;
        }
        letter["requeued"] = json!(true);
        let swapped = store
            .db
            .compare_and_swap(&key, &value, Some(letter.to_string().into_bytes()))?;
        // A failed swap: erased or changed by its sink meanwhile; left as is.
        if swapped {
            queued += 1;
        }
    }
    let missing = only
        .unwrap_or_default()
        .iter()
        .filter(|seq| !found.contains(seq))
        .copied()
        .collect();
    Ok((queued, missing))
}

/// A requeued letter as its sink reads it.
pub struct Requeued {
    key: crate::daemon::kv::Bytes,
    bytes: crate::daemon::kv::Bytes,
    pub seq: u64,
    pub letter: Value,
}

impl Requeued {
    pub fn record(&self) -> &Value {
        &self.letter["record"]
    }
}

/// The letters of `sink` queued for another try, in sequence order.
pub fn requeued(store: &Store, sink: &str) -> StoreResult<Vec<Requeued>> {
    let prefix = [&[PREFIX_DEAD][..], sink.as_bytes(), &[0]].concat();
    let end = [&[PREFIX_DEAD][..], sink.as_bytes(), &[1]].concat();
    let mut out = Vec::new();
    // On PostgreSQL the letters of the partitions this node holds (the
    // sink that takes one back writes to its partition).
    for item in store.db.range_of_held(prefix.clone()..end) {
        let (key, bytes) = item?;
        // Another sink whose name extends this one has a longer prefix.
        if key.len() != prefix.len() + 8 {
            continue;
        }
        let Ok(letter) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if letter.get("requeued").and_then(Value::as_bool) == Some(true) {
            out.push(Requeued {
                seq: seq_of_key(&key),
                key,
                bytes,
                letter,
            });
        }
    }
    Ok(out)
}

/// Moves a requeued letter to `key` (its sink's retry set) as `value`, in
/// one transaction; `false` when the letter was erased or changed meanwhile.
pub fn move_to(store: &Store, letter: &Requeued, key: &[u8], value: Vec<u8>) -> StoreResult<bool> {
    let mut batch = crate::daemon::kv::Batch::default();
    batch.remove(&letter.key);
    batch.insert(key, value);
    let moved = store.db.apply_if(&letter.key, &letter.bytes, batch)?;
    Ok(moved)
}

/// `journeyc outbox retry --data DIR`: queues the dead letters of a stopped
/// daemon's store; its sinks try them again at the next start.
pub fn requeue_offline(data: &std::path::Path, only: Option<&[u64]>) -> Result<(usize, Vec<u64>), String> {
    let dir = super::store_dir(data);
    if !dir.exists() {
        return Err(format!("no store in {} (expected {})", data.display(), dir.display()));
    }
    let store = Store::open(&dir, &super::store::StoreOptions::default()).map_err(|e| match e {
        StoreError::NewerFormat { .. } => e.to_string(),
        e => format!("cannot open the store (is the daemon running on this data dir? stop it first): {e}"),
    })?;
    let outcome = requeue(&store, only).map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db"), &Default::default()).expect("store");
        (dir, store)
    }

    fn failure<'a>(sink: &'a str, seq: u64, record: &'a Value) -> Failure<'a> {
        Failure {
            sink,
            seq,
            record,
            reason: Reason::AttemptsExhausted,
            error: "HTTP 503 Service Unavailable",
            attempts: 3,
        }
    }

    #[test]
    fn parking_keeps_the_bound_by_dropping_the_oldest() {
        let (_dir, store) = store();
        let record = json!({"id": "s1", "customer": "c1", "channel": "email"});
        for seq in [5, 3, 9] {
            assert_eq!(park(&store, &failure("webhook:a", seq, &record), 3).expect("park"), 0);
        }
        // Parking the same seq again replaces it and drops nothing.
        assert_eq!(park(&store, &failure("webhook:a", 9, &record), 3).expect("park"), 0);
        assert_eq!(park(&store, &failure("webhook:b", 7, &record), 3).expect("park"), 1);
        let seqs: Vec<u64> = list(&store, 10)
            .expect("list")
            .iter()
            .filter_map(|l| l["seq"].as_u64())
            .collect();
        assert_eq!(seqs, vec![5, 9, 7]);
        assert_eq!(count(&store), 3);
        let shown = &list(&store, 1).expect("list")[0];
        assert_eq!(shown["id"], "s1");
        assert_eq!(shown["customer"], "c1");
        assert_eq!(shown["reason"], "attempts_exhausted");
        assert_eq!(shown["last_error"], "HTTP 503 Service Unavailable");
        assert_eq!(shown["requeued"], false);
    }

    #[test]
    fn requeue_then_move() {
        let (_dir, store) = store();
        let record = json!({"id": "s1", "customer": "c1"});
        for seq in [1, 2, 3] {
            park(&store, &failure("webhook:a", seq, &record), 100).expect("park");
        }
        park(&store, &failure("webhook:ab", 4, &record), 100).expect("park");
        assert_eq!(requeue(&store, Some(&[2, 4, 8])).expect("requeue"), (2, vec![8]));
        // Only this sink's letters, not those of a sink whose name extends it.
        let queued = requeued(&store, "webhook:a").expect("queued");
        assert_eq!(queued.iter().map(|q| q.seq).collect::<Vec<_>>(), vec![2]);
        assert_eq!(queued[0].record()["id"], "s1");
        assert_eq!(queued[0].letter["attempts"], 3);
        // Moved: the letter goes, the new key holds the value.
        assert!(move_to(&store, &queued[0], b"moved-2", b"v".to_vec()).expect("move"));
        assert_eq!(count(&store), 3);
        assert_eq!(store.db.get(b"moved-2").expect("get").as_deref(), Some(&b"v"[..]));
        // A letter erased meanwhile is not brought back by its move.
        assert_eq!(requeue(&store, None).expect("requeue all"), (3, vec![]));
        let queued = requeued(&store, "webhook:a").expect("queued");
        assert_eq!(queued.len(), 2);
        store.db.remove(&queued[0].key).expect("erase");
        assert!(!move_to(&store, &queued[0], b"moved-1", b"v".to_vec()).expect("move"));
        assert_eq!(store.db.get(b"moved-1").expect("get"), None);
        assert_eq!(count(&store), 2);
    }
}
