//! Delivery isolation: a send that fails transiently leaves its sink's main
//! line, so one customer's failing endpoint or mailbox never delays another
//! customer's sends.
//!
//! Each delivering sink (webhook, SMTP) tries a record once in outbox order.
//! On a transient failure the record goes to the sink's *retry set*, under
//! `w/SINK 0 SEQ` ("waiting") with its due time, attempts, last error and the record
//! itself, written in one batch with the cursor that moves past it; and every
//! later record of the same customer on that sink joins it there without
//! being tried, so one customer's sends stay in order. The cursor moves on
//! to the other customers.
//!
//! Between rounds the sink tries the *head* of each waiting customer (its
//! lowest sequence number) once it is due, with the same backoff as before
//! (`WebhookOptions::backoff`). A delivered head goes, and the customer's
//! next record is tried at once. A head that used up `attempts_max`, or that
//! is refused for good (4xx, SMTP 5xx), becomes a dead letter
//! ([`super::dead`]) and the customer's later records are released in order:
//! tried next, as they would have been in line.
//!
//! A crash loses nothing: an entry is on disk before the cursor passes it,
//! and it is removed only after its delivery, so after a restart it is tried
//! again, same id (at least once). The set holds at most
//! [`RETRY_RECORDS_MAX`] records per sink; when it is full the cursor waits
//! (the records stay in the outbox) until entries leave. An erasure removes
//! the customer's entries in its batch (`CommitThread::erase_outside_group`);
//! every later change of an entry is a compare-and-swap against the bytes
//! read, so a retry never brings an erased entry back.

use super::dead::{self, Reason};
use super::outbox::{collect_garbage, park_dead_letter, DispatchContext};
use super::sinks::WebhookOptions;
use super::store::{cursor_key_in, Cursors, StoreResult, PREFIX_RETRY};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

const PARTITION_NONE: i32 = super::kv::pg::PARTITION_NONE;

/// Records a sink's retry set holds at most.
pub const RETRY_RECORDS_MAX: usize = 10_000;

/// Records read from the outbox per round.
const CHUNK_RECORDS_MAX: usize = 256;

/// The outcome of one try of one record.
pub enum Attempt {
    Done,
    /// The daemon is stopping.
    Stopped,
    /// Worth trying again (network, TLS, timeout, 5xx, 408, 429, SMTP 4xx).
    Transient(String),
    /// Trying again will not help (4xx, SMTP 5xx, a record that cannot become a message).
    Permanent(String),
}

/// What one kind of sink does with one record.
pub trait Sender: Send {
    /// Whether the sink delivers this outbox record.
    fn takes(&self, record: &Value) -> bool;
    /// One try: the same id and body on every try.
    fn attempt(&mut self, record: &Value, stopping: &mut watch::Receiver<bool>)
        -> impl Future<Output = Attempt> + Send;
}

pub fn retry_key(sink: &str, seq: u64) -> Vec<u8> {
    [&[PREFIX_RETRY][..], sink.as_bytes(), &[0], &seq.to_be_bytes()].concat()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One record in a retry set, as read.
struct Entry {
    key: crate::daemon::kv::Bytes,
    bytes: crate::daemon::kv::Bytes,
    seq: u64,
    value: Value,
}

impl Entry {
    fn attempts(&self) -> u32 {
        self.value["attempts"].as_u64().unwrap_or(0) as u32
    }
    fn due_ms(&self) -> u64 {
        self.value["due_ms"].as_u64().unwrap_or(0)
    }
    fn record(&self) -> &Value {
        &self.value["record"]
    }
    /// Attempts of a requeued dead letter before it was requeued.
    fn before(&self) -> u32 {
        self.value["before"].as_u64().unwrap_or(0) as u32
    }
}

fn entry_value(seq: u64, record: &Value, attempts: u32, due_ms: u64, error: &str) -> Value {
    json!({
        "seq": seq,
        "customer": record.get("customer").cloned().unwrap_or(Value::Null),
        "attempts": attempts,
        "due_ms": due_ms,
        "error": error,
        "record": record,
    })
}

fn customer_of(record: &Value) -> String {
    record
        .get("customer")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The entries of `sink`'s retry set by customer, each customer's in
/// sequence order, the customers by their head's sequence number.
fn waiting(store: &super::store::Store, sink: &str) -> StoreResult<Vec<(String, Vec<Entry>)>> {
    let prefix = [&[PREFIX_RETRY][..], sink.as_bytes(), &[0]].concat();
    let mut by_customer: HashMap<String, Vec<Entry>> = HashMap::new();
    // On PostgreSQL those of the partitions this node holds: an entry of
    // another's is that node's to try (its change here would be refused).
    let end = [&[PREFIX_RETRY][..], sink.as_bytes(), &[1]].concat();
    for item in store.db.range_of_held(prefix.clone()..end) {
        let (key, bytes) = item?;
        // Another sink whose name extends this one has a longer prefix.
        if key.len() != prefix.len() + 8 {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        let seq = u64::from_be_bytes(key[prefix.len()..].try_into().expect("8 bytes"));
        let customer = customer_of(&value["record"]);
        by_customer
            .entry(customer)
            .or_default()
            .push(Entry { key, bytes, seq, value });
    }
    let mut customers: Vec<(String, Vec<Entry>)> = by_customer.into_iter().collect();
    customers.sort_by_key(|(_, entries)| entries[0].seq);
    Ok(customers)
}

/// Records waiting for a retry, over all sinks (`journeyc_outbox_retry_waiting`).
pub fn count(store: &super::store::Store) -> usize {
    store
        .db
        .scan_prefix([PREFIX_RETRY])
        .keys()
        .filter(Result::is_ok)
        .count()
}

/// Runs a delivering sink until `stopping`: the main line in outbox order,
/// the retry set between rounds, and the requeued dead letters (moved into
/// the retry set) when asked.
pub async fn run<S: Sender>(
    context: DispatchContext,
    name: String,
    mut sender: S,
    options: WebhookOptions,
    mut cursors: Cursors,
) {
    let mut committed = context.committed.clone();
    let mut stopping = context.stopping.clone();
    let mut retries = context.dead_retry.clone();
    // Letters queued while the daemon was stopped (`journeyc outbox retry`).
    let mut retry_pending = true;
    let mut retries_open = true;
    let attempts_max = options.attempts_max.max(1);
    // On PostgreSQL a round runs at each wake-up and again while rounds
    // come back full (what is read is committed); on sled while the
    // cursor is behind the published sequence number.
    let partitioned = context.store.outbox_partitioned();
    let mut pending = true;
    let mut held_partitions = super::outbox::ownership_receiver(&context.store);
    loop {
        if *stopping.borrow() {
            return;
        }
        if retry_pending {
            retry_pending = false;
            retries.borrow_and_update();
            adopt_requeued(&context, &name);
            continue;
        }
        let customers = match waiting(&context.store, &name) {
            Ok(customers) => customers,
            Err(error) => {
                tracing::error!(%error, "reading the retry set failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let now = now_ms();
        if customers.iter().any(|(_, entries)| entries[0].due_ms() <= now) {
            if retry_due(&context, &name, &mut sender, &options, customers, &mut stopping)
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let mut held: HashMap<String, usize> = customers
            .iter()
            .map(|(customer, entries)| (customer.clone(), entries.len()))
            .collect();
        let mut in_set: usize = held.values().sum();
        let next_due = customers.iter().map(|(_, entries)| entries[0].due_ms()).min();
        // A publication or a change of the held set since the last round
        // (on PostgreSQL) asks for another.
        pending |= partitioned && super::outbox::watch_changed(&mut committed);
        let target = *committed.borrow_and_update();
        if let Some(held) = held_partitions.as_mut() {
            pending |= super::outbox::watch_changed(held);
        }
        let behind = match partitioned {
            true => pending,
            false => cursors.get(PARTITION_NONE) < target,
        };
        if behind && in_set < RETRY_RECORDS_MAX {
            let super::store::Delivery {
                items: records,
                next,
                more,
            } = match context.store.outbox_after(&cursors, target, CHUNK_RECORDS_MAX) {
                Ok(found) => found,
                Err(error) => {
                    tracing::error!(%error, "reading the outbox failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut stopped_early = false;
            for item in &records {
                let seq = &item.seq;
                let Ok(record) = serde_json::from_str::<Value>(&item.line) else {
                    continue;
                };
                let mut entry = None;
                if sender.takes(&record) {
                    let customer = customer_of(&record);
                    if let Some(count) = held.get_mut(&customer) {
                        // Behind the customer's waiting send, untried.
                        *count += 1;
                        entry = Some(entry_value(*seq, &record, 0, 0, ""));
                    } else {
                        match sender.attempt(&record, &mut stopping).await {
                            Attempt::Done => context.metrics.records_delivered.inc(),
                            Attempt::Stopped => return,
                            Attempt::Permanent(error) => {
                                park_dead_letter(&context, &name, *seq, &record, Reason::Refused, &error, 1);
                            }
                            Attempt::Transient(error) if attempts_max == 1 => {
                                park_dead_letter(&context, &name, *seq, &record, Reason::AttemptsExhausted, &error, 1);
                            }
                            Attempt::Transient(error) => {
                                tracing::debug!(sink = %name, seq, %error, "delivery failed; waiting for a retry");
                                held.insert(customer, 1);
                                let due = now_ms() + options.backoff(1).as_millis() as u64;
                                entry = Some(entry_value(*seq, &record, 1, due, &error));
                            }
                        }
                    }
                }
                cursors.advance(item.partition, *seq);
                let mut batch = crate::daemon::kv::Batch::default();
                if let Some(entry) = &entry {
                    batch.insert(retry_key(&name, *seq), entry.to_string().into_bytes());
                    in_set += 1;
                }
                batch.insert(cursor_key_in(&name, item.partition), &seq.to_be_bytes());
                if let Err(error) = context.store.db.apply_batch(batch) {
                    tracing::error!(%error, "could not store the sink cursor");
                }
                if in_set >= RETRY_RECORDS_MAX {
                    tracing::warn!(sink = %name, "the retry set is full ({RETRY_RECORDS_MAX}); the sink waits for it");
                    stopped_early = true;
                    break;
                }
            }
            if !stopped_early {
                // On sled the cursor moves over the gaps up to `target`.
                let before = cursors.clone();
                cursors = next;
                let _ = context.store.set_cursors(&name, &cursors, &before);
            }
            pending = partitioned && (more || stopped_early);
            collect_garbage(&context.store, &context.sink_names);
            continue;
        }
        let wait = next_due.map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(1)));
        tokio::select! {
            changed = committed.changed(), if !behind => match changed {
                Ok(()) => pending = partitioned,
                Err(_) => return,
            },
            _ = stopping.changed() => {},
            changed = retries.changed(), if retries_open => match changed {
                Ok(()) => retry_pending = true,
                Err(_) => retries_open = false,
            },
            changed = async { held_partitions.as_mut().expect("checked").changed().await }, if held_partitions.is_some() => {
                if changed.is_err() {
                    held_partitions = None;
                }
                pending = true;
            }
            _ = tokio::time::sleep(wait.unwrap_or(Duration::MAX)), if wait.is_some() => {},
        }
    }
}

/// Tries the due head of every waiting customer; a delivered or parked head
/// lets the customer's next record be tried at once. `Err` when stopping.
async fn retry_due<S: Sender>(
    context: &DispatchContext,
    name: &str,
    sender: &mut S,
    options: &WebhookOptions,
    customers: Vec<(String, Vec<Entry>)>,
    stopping: &mut watch::Receiver<bool>,
) -> Result<(), ()> {
    let attempts_max = options.attempts_max.max(1);
    let now = now_ms();
    for (_, entries) in customers {
        if entries[0].due_ms() > now {
            continue;
        }
        for entry in entries {
            let attempts = entry.attempts() + 1;
            let outcome = sender.attempt(entry.record(), stopping).await;
            let permanent = matches!(outcome, Attempt::Permanent(_));
            let (replace, go_on) = match outcome {
                Attempt::Stopped => return Err(()),
                Attempt::Done => {
                    context.metrics.records_delivered.inc();
                    tracing::info!(sink = %name, seq = entry.seq, attempts, "delivered on retry");
                    (None, true)
                }
                Attempt::Transient(error) if attempts < attempts_max => {
                    let due = now_ms() + options.backoff(attempts).as_millis() as u64;
                    let mut again = entry_value(entry.seq, entry.record(), attempts, due, &error);
                    again["before"] = json!(entry.before());
                    (Some(again.to_string().into_bytes()), false)
                }
                Attempt::Transient(error) | Attempt::Permanent(error) => {
                    let reason = if permanent {
                        Reason::Refused
                    } else {
                        Reason::AttemptsExhausted
                    };
                    let total = entry.before() + attempts;
                    park_dead_letter(context, name, entry.seq, entry.record(), reason, &error, total);
                    (None, true)
                }
            };
            // A failed swap: erased meanwhile; left as is.
            if let Err(error) = context.store.db.compare_and_swap(&entry.key, &entry.bytes, replace) {
                tracing::error!(%error, "could not update the retry set");
            }
            if !go_on {
                break;
            }
        }
    }
    Ok(())
}

/// Moves the sink's requeued dead letters into its retry set, due at once,
/// where they are tried like any other waiting send, ahead of their
/// customer's later ones; a letter that fails again is parked again with
/// its attempts added up.
fn adopt_requeued(context: &DispatchContext, name: &str) {
    let letters = match dead::requeued(&context.store, name) {
        Ok(letters) => letters,
        Err(error) => {
            tracing::error!(%error, "reading the dead letters failed");
            return;
        }
    };
    for letter in letters {
        let mut value = entry_value(letter.seq, letter.record(), 0, 0, "");
        value["before"] = letter.letter.get("attempts").cloned().unwrap_or(json!(0));
        let key = retry_key(name, letter.seq);
        match dead::move_to(&context.store, &letter, &key, value.to_string().into_bytes()) {
            Ok(true) => tracing::info!(sink = %name, seq = letter.seq, "dead letter requeued for a retry"),
            Ok(false) => {}
            Err(error) => tracing::error!(%error, "could not requeue a dead letter"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_groups_by_customer_in_sequence_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = super::super::store::Store::open(&dir.path().join("db"), &Default::default()).expect("store");
        for (seq, customer) in [(7, "b"), (3, "a"), (9, "a"), (5, "b")] {
            let record = json!({"id": format!("s{seq}"), "customer": customer});
            let value = entry_value(seq, &record, 0, 0, "");
            store
                .db
                .insert(retry_key("webhook:x", seq), value.to_string().into_bytes())
                .expect("insert");
        }
        // Another sink whose name extends this one is not this one's.
        let other = entry_value(1, &json!({"customer": "c"}), 0, 0, "");
        store
            .db
            .insert(retry_key("webhook:xy", 1), other.to_string().into_bytes())
            .expect("insert");
        let customers = waiting(&store, "webhook:x").expect("waiting");
        let shown: Vec<(String, Vec<u64>)> = customers
            .iter()
            .map(|(customer, entries)| (customer.clone(), entries.iter().map(|e| e.seq).collect()))
            .collect();
        assert_eq!(
            shown,
            vec![("a".to_string(), vec![3, 9]), ("b".to_string(), vec![5, 7])]
        );
        assert_eq!(count(&store), 5);
    }
}
