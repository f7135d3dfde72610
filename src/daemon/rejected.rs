//! The rejected store: every call the daemon refused, from any endpoint,
//! kept with its reason and time so that nothing a source sent is lost.
//! `GET /v1/rejected` lists it; `POST /v1/rejected/replay` validates the
//! kept calls again against the current workspace and ingests those that
//! now pass (a schema fix, `POST /v1/reload`, a replay). Contract:
//! `docs/daemon.md`, "Refused calls".
//!
//! Bounded: at most [`REJECTED_MAX`] entries (the oldest go first), and a
//! call is kept whole only up to [`REJECTED_CALL_BYTES_MAX`] bytes of JSON
//! (a larger one is kept with its reason but cannot be replayed). Erased with
//! the customer it names (`DELETE /v1/customers/ID`).
//!
//! Keys, in the store's one tree: `r` + id (u64 BE, `sled`'s monotonic id
//! generator: oldest first) → the JSON [`Rejection`]; `R` + customer +
//! `0x00` + id → empty, to find a customer's entries when erasing it.

use super::kv::pg::Pg;
use super::kv::{Batch, Kv};
use super::store::{Store, StoreResult};
use crate::runtime::Millis;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most entries kept; beyond it the oldest are dropped.
pub const REJECTED_MAX: usize = 10_000;
/// The largest call kept whole (its JSON text); larger calls keep only the reason.
pub const REJECTED_CALL_BYTES_MAX: usize = 64 * 1024;
/// How old the count of entries may get on PostgreSQL before it is read
/// again (other nodes keep refusals too).
pub const RECOUNT_EVERY: Duration = Duration::from_secs(1);

const PREFIX_REJECTED: u8 = b'r';
const PREFIX_REJECTED_BY_CUSTOMER: u8 = b'R';

/// One refused call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// Assigned when stored; increases with time.
    #[serde(default)]
    pub id: u64,
    /// When the daemon received it (RFC 3339 in answers, ms here).
    pub received_at: Millis,
    /// `track`, `identify`, `batch`, …
    pub endpoint: String,
    /// The position in a `/v1/batch` request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// `userId`, else `anonymousId`, when the call has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    pub field: String,
    pub reason: String,
    /// The call as sent; absent when the request was not JSON or the call
    /// was over [`REJECTED_CALL_BYTES_MAX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<serde_json::Value>,
    /// The start of a body that was not JSON (lossy UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl Rejection {
    /// A refused call (`call` is the JSON as sent).
    pub fn of_call(
        endpoint: &str,
        index: Option<usize>,
        call: serde_json::Value,
        field: &str,
        reason: &str,
        received_at: Millis,
    ) -> Rejection {
        let customer = ["userId", "anonymousId"].iter().find_map(|key| match call.get(key) {
            Some(serde_json::Value::String(id)) if !id.is_empty() => Some(id.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
        let size = serde_json::to_vec(&call).map_or(usize::MAX, |text| text.len());
        let (call, reason) = if size <= REJECTED_CALL_BYTES_MAX {
            (Some(call), reason.to_string())
        } else {
            (
                None,
                format!("{reason} (the call, {size} bytes, was too large to keep)"),
            )
        };
        Rejection {
            id: 0,
            received_at,
            endpoint: endpoint.to_string(),
            index,
            customer,
            field: field.to_string(),
            reason,
            call,
            body: None,
        }
    }

    /// A request refused as a whole (not JSON, too large, not a batch).
    pub fn of_body(endpoint: &str, body: &[u8], field: &str, reason: &str, received_at: Millis) -> Rejection {
        let kept = &body[..body.len().min(REJECTED_CALL_BYTES_MAX)];
        Rejection {
            id: 0,
            received_at,
            endpoint: endpoint.to_string(),
            index: None,
            customer: None,
            field: field.to_string(),
            reason: reason.to_string(),
            call: None,
            body: (!kept.is_empty()).then(|| String::from_utf8_lossy(kept).into_owned()),
        }
    }

    /// As `GET /v1/rejected` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("a rejection serializes");
        value["received_at"] = serde_json::Value::from(crate::runtime::trace::format_time(self.received_at));
        value
    }
}

/// The store's rejected entries with their count (kept in memory so that
/// the bound costs nothing per refusal; on PostgreSQL, where other nodes
/// add and remove entries too, it is counted again from the store when
/// [`RECOUNT_EVERY`] has passed, and at every [`RejectedStore::len`]).
pub struct RejectedStore {
    store: Store,
    /// The count, and when it was last read from the store.
    count: Mutex<(usize, Instant)>,
    /// A standby's (`docs/scale-out.md`): its writes are
    /// [`Pg::apply_unfenced`] (records named by fresh ids, held in memory
    /// by no owner), not the owner's fenced batches.
    unfenced: Option<Pg>,
    /// [`REJECTED_MAX`] but in tests.
    max: usize,
    /// One replay at a time.
    pub replay_lock: tokio::sync::Mutex<()>,
    warnings: WarnLimiter,
}

fn key(id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(PREFIX_REJECTED);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn customer_prefix(customer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(customer.len() + 2);
    key.push(PREFIX_REJECTED_BY_CUSTOMER);
    key.extend_from_slice(customer.as_bytes());
    key.push(0);
    key
}

fn customer_key(customer: &str, id: u64) -> Vec<u8> {
    let mut key = customer_prefix(customer);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn decode(value: &[u8]) -> StoreResult<Rejection> {
    serde_json::from_slice(value).map_err(|e| super::store::StoreError::Corrupt {
        key: "r…".into(),
        reason: e.to_string(),
    })
}

impl RejectedStore {
    pub fn open(store: Store) -> StoreResult<RejectedStore> {
        Self::open_with_max(store, REJECTED_MAX, None)
    }

    /// The rejected store of a standby, which writes outside the lease.
    pub fn open_unfenced(store: Store, pg: Pg) -> StoreResult<RejectedStore> {
        Self::open_with_max(store, REJECTED_MAX, Some(pg))
    }

    fn open_with_max(store: Store, max: usize, unfenced: Option<Pg>) -> StoreResult<RejectedStore> {
        let count = Self::stored_count(&store);
        Ok(RejectedStore {
            store,
            count: Mutex::new((count, Instant::now())),
            max,
            unfenced,
            replay_lock: tokio::sync::Mutex::new(()),
            warnings: WarnLimiter::new(Duration::from_secs(1)),
        })
    }

    /// The entries in the store: a count of the `r` keys (on PostgreSQL
    /// one `count(*)`, not a scan of the records); 0 when it cannot be read.
    fn stored_count(store: &Store) -> usize {
        store.db.count_prefix([PREFIX_REJECTED]).unwrap_or_else(|error| {
            tracing::warn!(%error, "counting the refused calls failed");
            0
        })
    }

    /// The count, read again from the store on PostgreSQL when `always`
    /// or when older than [`RECOUNT_EVERY`].
    fn counted(&self, always: bool) -> std::sync::MutexGuard<'_, (usize, Instant)> {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(self.store.db, Kv::Postgres(_)) && (always || count.1.elapsed() >= RECOUNT_EVERY) {
            *count = (Self::stored_count(&self.store), Instant::now());
        }
        count
    }

    fn apply(&self, batch: Batch) -> StoreResult<()> {
        match &self.unfenced {
            // Notified: the batch may hold a standby's inbox record.
            Some(pg) => pg.apply_unfenced(batch, Some(super::kv::pg::CHANNEL_INBOX)),
            None => self.store.db.apply_batch(batch),
        }
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.counted(true).0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps refused calls (and logs them at warn, at most one line a
    /// second). Durable with the next flush of the store: the intake
    /// answers after one.
    pub fn put(&self, rejections: Vec<Rejection>) -> StoreResult<()> {
        self.put_with(rejections, Batch::default())
    }

    /// [`RejectedStore::put`] with `also` written in the same batch (a
    /// standby's inbox record beside the refusals of its request, an
    /// unreadable inbox record's removal).
    pub fn put_with(&self, rejections: Vec<Rejection>, also: Batch) -> StoreResult<()> {
        let mut count = self.counted(false);
        let mut batch = also;
        let mut added = 0;
        for mut rejection in rejections {
            self.warnings.warn(&rejection);
            rejection.id = self.store.db.generate_id()?;
            let value = serde_json::to_vec(&rejection).expect("a rejection serializes");
            batch.insert(key(rejection.id), value);
            if let Some(customer) = &rejection.customer {
                batch.insert(customer_key(customer, rejection.id), &[][..]);
            }
            added += 1;
        }
        self.apply(batch)?;
        count.0 += added;
        let excess = count.0.saturating_sub(self.max);
        if excess > 0 {
            let oldest: Vec<Rejection> = self
                .store
                .db
                .scan_prefix([PREFIX_REJECTED])
                .values()
                .take(excess)
                .map(|value| decode(&value?))
                .collect::<StoreResult<_>>()?;
            count.0 -= oldest.len();
            self.apply(Self::removal(&oldest))?;
        }
        Ok(())
    }

    fn removal(rejections: &[Rejection]) -> crate::daemon::kv::Batch {
        let mut batch = crate::daemon::kv::Batch::default();
        for rejection in rejections {
            batch.remove(key(rejection.id));
            if let Some(customer) = &rejection.customer {
                batch.remove(customer_key(customer, rejection.id));
            }
        }
        batch
    }

    /// Up to `limit` entries with ids above `after` (all with `None`), oldest first.
    pub fn list(&self, after: Option<u64>, limit: usize) -> StoreResult<Vec<Rejection>> {
        let start = match after {
            None => key(0),
            Some(u64::MAX) => return Ok(Vec::new()),
            Some(after) => key(after + 1),
        };
        let end = [PREFIX_REJECTED + 1];
        self.store
            .db
            .range(start..end.to_vec())
            .values()
            .take(limit)
            .map(|value| decode(&value?))
            .collect()
    }

    /// Drops entries (replayed ones).
    pub fn remove(&self, rejections: &[Rejection]) -> StoreResult<()> {
        let mut count = self.counted(false);
        let mut present = Vec::new();
        for rejection in rejections {
            if self.store.db.contains_key(key(rejection.id))? {
                present.push(rejection.clone());
            }
        }
        self.apply(Self::removal(&present))?;
        count.0 = count.0.saturating_sub(present.len());
        Ok(())
    }

    /// Rewrites an entry in place (its reason after a failed replay).
    pub fn update(&self, rejection: &Rejection) -> StoreResult<()> {
        let value = serde_json::to_vec(rejection).expect("a rejection serializes");
        if self.store.db.contains_key(key(rejection.id))? {
            self.store.db.insert(key(rejection.id), value)?;
        }
        Ok(())
    }

    /// Erases every entry that names `customer`; returns how many.
    pub fn erase_customer(&self, customer: &str) -> StoreResult<usize> {
        let prefix = customer_prefix(customer);
        let mut gone = Vec::new();
        for index in self.store.db.scan_prefix(&prefix).keys() {
            let index = index?;
            let mut id = [0u8; 8];
            id.copy_from_slice(&index[prefix.len()..]);
            let id = u64::from_be_bytes(id);
            if let Some(value) = self.store.db.get(key(id))? {
                gone.push(decode(&value)?);
            } else {
                self.store.db.remove(index)?;
            }
        }
        self.remove(&gone)?;
        Ok(gone.len())
    }
}

/// Warn-level log lines for refusals, at most one per `every`, each saying
/// how many were left out since the last.
struct WarnLimiter {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl WarnLimiter {
    fn new(every: Duration) -> WarnLimiter {
        WarnLimiter {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    fn warn(&self, rejection: &Rejection) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => state.1 += 1,
            _ => {
                tracing::warn!(
                    endpoint = %rejection.endpoint,
                    customer = rejection.customer.as_deref().unwrap_or(""),
                    field = %rejection.field,
                    reason = %rejection.reason,
                    suppressed = state.1,
                    "call refused (kept in /v1/rejected)"
                );
                *state = (Some(now), 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::store::StoreOptions;
    use serde_json::json;

    fn call(customer: &str, n: usize) -> Rejection {
        let call = json!({"type": "track", "userId": customer, "event": "nope", "properties": {"n": n}});
        Rejection::of_call("batch", Some(n), call, "event", "not declared", 1000)
    }

    /// The oldest entries go beyond the bound; erasure finds a customer's
    /// entries through its index; the count survives a reopen.
    #[test]
    fn bounded_oldest_first_and_erased_with_the_customer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let rejected = RejectedStore::open_with_max(store.clone(), 3, None).expect("open");
        rejected
            .put(
                (0..5)
                    .map(|n| call(if n % 2 == 0 { "even" } else { "odd" }, n))
                    .collect(),
            )
            .expect("put");
        assert_eq!(rejected.len(), 3);
        let kept: Vec<Option<usize>> = rejected.list(None, 10).expect("list").iter().map(|r| r.index).collect();
        assert_eq!(kept, vec![Some(2), Some(3), Some(4)]);
        let first = rejected.list(None, 1).expect("list")[0].id;
        let rest: Vec<Option<usize>> = rejected
            .list(Some(first), 10)
            .expect("list")
            .iter()
            .map(|r| r.index)
            .collect();
        assert_eq!(rest, vec![Some(3), Some(4)]);
        assert_eq!(rejected.erase_customer("even").expect("erase"), 2);
        assert_eq!(rejected.erase_customer("even").expect("erase"), 0);
        let left = rejected.list(None, 10).expect("list");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].customer.as_deref(), Some("odd"));
        // The evicted entries took their index keys with them.
        assert_eq!(store.db.scan_prefix([PREFIX_REJECTED_BY_CUSTOMER]).count(), 1);
        drop(rejected);
        assert_eq!(RejectedStore::open(store).expect("reopen").len(), 1);
    }

    #[test]
    fn a_call_too_large_to_keep_keeps_its_reason() {
        let big = json!({"userId": "c1", "pad": "x".repeat(REJECTED_CALL_BYTES_MAX)});
        let rejection = Rejection::of_call("track", None, big, "event", "missing", 0);
        assert_eq!(rejection.call, None);
        assert_eq!(rejection.customer.as_deref(), Some("c1"));
        assert!(
            rejection.reason.starts_with("missing (the call, "),
            "{}",
            rejection.reason
        );
        let anonymous = Rejection::of_call("track", None, json!({"anonymousId": "a1"}), "", "x", 0);
        assert_eq!(anonymous.customer.as_deref(), Some("a1"));
    }
}
