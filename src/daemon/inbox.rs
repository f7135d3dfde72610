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
//! transaction), and looks every second anyway.

use super::commit::{CommitError, Committer};
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
                    tracing::error!(%error, key = ?key, "an unreadable inbox record is dropped");
                    let _ = store.db.remove(&key);
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
                    // As the owner refuses such a request with a 500; kept,
                    // it would stop every record after it.
                    tracing::error!(key = ?key, "an inbox record made the interpreter fail; dropped");
                    let _ = store.db.remove(&key);
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
