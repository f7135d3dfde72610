//! Intake at any node (PostgreSQL store, `docs/scale-out.md`): a standby
//! validates a request as the owner would and writes its calls as one inbox
//! record, key `i` + a unique id (big-endian, from the store's id sequence,
//! so records sort in the order they were written), value the calls as
//! JSON, in one transaction: committed means acked. The owner takes the
//! records in key order, one at a time, into its commit thread as an ingest
//! whose batch also removes the record ([`Committer::ingest_from_inbox`]):
//! the state update, timers, outbox and the inbox delete are one fenced
//! transaction, so each record is applied exactly once, also across a kill
//! -9 of either node, and one customer's calls keep their order. The
//! owner is woken by `LISTEN`/`NOTIFY` (the write notifies in its
//! transaction), and looks every second anyway. A standby's request with
//! refused calls has them kept (`r`/`R`, `rejected.rs`) in the same
//! transaction as its inbox record. A record the owner cannot apply (it
//! does not decode, or the interpreter panics on it) is not dropped: it
//! moves to the refused calls ([`kept_refused`]).

use super::commit::{CommitError, Committer};
use super::kv::Batch;
use super::rejected::{RejectedStore, Rejection};
use super::store::Store;
use crate::runtime::input::Call;
use std::time::Duration;
use tokio::sync::watch;

/// The first byte of an inbox record's key.
pub const PREFIX_INBOX: u8 = b'i';
/// How often the owner looks for new records when no notification came
/// (`LISTEN journeyc_inbox` wakes it at once).
const POLL: Duration = Duration::from_secs(1);
/// Records taken per look.
const TAKE: usize = 64;

pub fn key(id: u64) -> Vec<u8> {
    let mut key = vec![PREFIX_INBOX];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn encode(calls: &[Call]) -> Vec<u8> {
    serde_json::to_vec(calls).expect("calls always serialize")
}

/// Applies the inbox's records until `stopping` (the owner's round).
pub async fn drain(store: Store, committer: Committer, mut stopping: watch::Receiver<bool>) {
    let wakeups = match &store.db {
        super::kv::Kv::Postgres(pg) => pg.inbox_wakeups(),
        super::kv::Kv::Sled(_) => return,
    };
    loop {
        let records: Vec<_> = store.db.scan_prefix([PREFIX_INBOX]).take(TAKE).collect();
        let mut taken = 0;
        for record in records {
            let (key, value) = match record {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(%error, "reading the inbox failed");
                    break;
                }
            };
            let calls: Vec<Call> = match serde_json::from_slice(&value) {
                Ok(calls) => calls,
                Err(error) => {
                    let reason = format!("an inbox record this node cannot read: {error}");
                    kept_refused(&store, &key, &value, &reason);
                    continue;
                }
            };
            match committer.ingest_from_inbox(calls, key.to_vec()).await {
                Ok(()) => taken += 1,
                Err(CommitError::ShuttingDown) => return,
                Err(CommitError::Storage(error) | CommitError::PartitionNotOwned(error)) => {
                    // Kept: taken again at the next look.
                    tracing::warn!(%error, "applying an inbox record failed");
                    break;
                }
                Err(CommitError::Panicked) => {
                    // As the owner refuses such a request with a 500; left
                    // in the inbox, it would stop every record after it.
                    kept_refused(&store, &key, &value, "the interpreter failed on this inbox record");
                }
            }
        }
        if *stopping.borrow() {
            return;
        }
        if taken < TAKE {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return,
                () = wakeups.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// An inbox record the owner cannot apply (it does not decode, or the
/// interpreter panicked on it) moves to the refused calls, its removal from
/// the inbox in the same batch: what a standby acked is not lost, and
/// `GET /v1/rejected` shows it with `endpoint` `inbox`. Each call of a
/// record that is a JSON array is kept on its own, naming its customer
/// (so erasing the customer erases it); anything else is kept as a body.
/// A failure to write leaves the record for the next look.
fn kept_refused(store: &Store, key: &[u8], value: &[u8], reason: &str) {
    let received_at = super::timers::now_ms();
    let rejections: Vec<Rejection> = match serde_json::from_slice::<Vec<serde_json::Value>>(value) {
        Ok(calls) => calls
            .into_iter()
            .enumerate()
            .map(|(index, call)| {
                let customer = call.get("customer").and_then(|c| c.as_str()).map(str::to_string);
                let mut rejection = Rejection::of_call("inbox", Some(index), call, "", reason, received_at);
                if rejection.customer.is_none() {
                    rejection.customer = customer;
                }
                rejection
            })
            .collect(),
        Err(_) => vec![Rejection::of_body("inbox", value, "", reason, received_at)],
    };
    let mut removal = Batch::default();
    removal.remove(key.to_vec());
    let kept = RejectedStore::open(store.clone()).and_then(|rejected| rejected.put_with(rejections, removal));
    match kept {
        Ok(()) => tracing::error!(key = ?key, %reason, "an inbox record kept as refused calls (GET /v1/rejected)"),
        Err(error) => tracing::warn!(%error, "keeping an unusable inbox record as refused failed; kept in the inbox"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::store::StoreOptions;

    /// A record of calls (as a standby wrote it) that the interpreter
    /// failed on is kept call by call with its customers, one that is no
    /// JSON as a body; each leaves the inbox in the same batch.
    #[test]
    fn an_unusable_record_moves_to_the_refused_calls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let call = |customer: &str| Call {
            customer: customer.into(),
            input: crate::runtime::input::Input::Identify {
                traits: Default::default(),
                subscriptions: Default::default(),
                at: 5,
                message_id: None,
            },
            merge: None,
            fill: Default::default(),
            group: None,
        };
        let written = encode(&[call("p1"), call("p2")]);
        store.db.insert(key(7), written).expect("insert");
        store.db.insert(key(8), &b"\xff not json"[..]).expect("insert");
        kept_refused(
            &store,
            &key(7),
            &store.db.get(key(7)).expect("get").expect("record"),
            "panicked",
        );
        kept_refused(&store, &key(8), b"\xff not json", "unreadable");
        assert_eq!(store.db.scan_prefix([PREFIX_INBOX]).count(), 0);
        let kept = RejectedStore::open(store.clone())
            .expect("open")
            .list(None, 10)
            .expect("list");
        let customers: Vec<Option<&str>> = kept.iter().map(|r| r.customer.as_deref()).collect();
        assert_eq!(customers, vec![Some("p1"), Some("p2"), None], "{kept:?}");
        assert_eq!(kept[1].call.as_ref().map(|c| c["customer"].clone()), Some("p2".into()));
        assert!(kept.iter().all(|r| r.endpoint == "inbox"), "{kept:?}");
        let last = kept.last().expect("the unreadable one");
        assert_eq!((last.reason.as_str(), last.customer.as_deref()), ("unreadable", None));
        assert!(last.body.as_deref().is_some_and(|b| b.contains("not json")), "{last:?}");
        assert_eq!(
            RejectedStore::open(store.clone())
                .expect("open")
                .erase_customer("p1")
                .expect("erase"),
            1
        );
    }
}
