//! The outbox dispatcher: moves committed outbox records to the sinks.
//!
//! Each sink has a cursor (the last sequence number it has), stored under
//! `k/SINK`. A sink reads only records up to the durable sequence number the
//! commit thread publishes, so nothing reaches a sink that a crash could take
//! back. Records every sink has are deleted.
//!
//! **Exactly once into the JSONL file:** a record's line is appended and the
//! file synced before the cursor moves; on start the file's last complete line
//! (its `seq`) says what is already there, a torn line is cut off, and
//! delivery resumes after it. Sequence numbers are never reused (`m/seq` is
//! written in the same batch as the records). The webhook sink is
//! at-least-once; its `Idempotency-Key` header makes that effectively once.
//! A send that fails waits in the sink's retry set ([`super::retry`]) while
//! the other customers' sends go on; one it gives up on is parked as a dead
//! letter ([`super::dead`]) and delivered again, with the same id, once
//! requeued; rate limits per sink and per channel ([`super::rate`]) space
//! its requests in order.

use super::dead;
use super::metrics::Metrics;
use super::rate::{ChannelLimiters, Limiter, Rates};
use super::retry::{self, Attempt, Sender};
use super::sinks::{webhook_signature, JsonlSink, Sink, SinkSpec, WebhookOptions};
use super::store::{Cursors, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const PARTITION_NONE: i32 = super::kv::pg::PARTITION_NONE;

/// Records read from the store per delivery round.
pub const CHUNK_RECORDS_MAX: usize = 2048;

/// Deletes outbox records every configured sink has.
pub fn collect_garbage(store: &Store, sinks: &[String]) {
    let mut all = Vec::with_capacity(sinks.len());
    for sink in sinks {
        match store.cursors(sink) {
            Ok(cursors) => all.push(cursors),
            Err(_) => return,
        }
    }
    if let Err(error) = store.collect_outbox(&all) {
        tracing::warn!(%error, "outbox garbage collection failed");
    }
}

/// Where a sink starts: after what it already has. On sled the one cursor,
/// or the file's last sequence number if that is further; on PostgreSQL
/// the stored cursors of every partition (a JSONL sink skips the records
/// its file's tail already holds, [`JsonlSink::open`]).
pub fn start_cursor(store: &Store, sink: &str, file_tail: Option<u64>) -> Cursors {
    if store.outbox_partitioned() {
        return store.cursors(sink).unwrap_or_default();
    }
    let stored = store.cursor(sink).ok().flatten();
    Cursors::one(match (stored, file_tail) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        // A new sink starts at the oldest record still in the outbox.
        (None, None) => store
            .first_outbox_seq()
            .ok()
            .flatten()
            .map_or(0, |s| s.saturating_sub(1)),
    })
}

/// Shared by the sink loops.
#[derive(Clone)]
pub struct DispatchContext {
    pub store: Store,
    pub committed: watch::Receiver<u64>,
    /// Set to true when the daemon stops; sinks drain what is committed and return.
    pub stopping: watch::Receiver<bool>,
    pub sink_names: Arc<Vec<String>>,
    pub metrics: Arc<Metrics>,
    /// Bumped by `POST /v1/outbox/retry`: webhook sinks look for requeued
    /// dead letters.
    pub dead_retry: watch::Receiver<u64>,
}

/// Runs the JSONL sink until `stopping` (after a final drain).
pub async fn run_jsonl(context: DispatchContext, route: Sink, sink: JsonlSink, mut cursors: Cursors) {
    let name = route.name();
    let route = Arc::new(route);
    let mut committed = context.committed.clone();
    let mut stopping = context.stopping.clone();
    let mut sink = Some(sink);
    // On PostgreSQL every round reads what is committed (nothing else is
    // visible): a round runs at each wake-up, and again at once while
    // rounds come back full. On sled while the cursor is behind the
    // published sequence number.
    let partitioned = context.store.outbox_partitioned();
    let mut pending = true;
    let mut closed = false;
    let mut held = ownership_receiver(&context.store);
    loop {
        // A publication or a change of the held set during the last round
        // (on PostgreSQL) asks for another.
        pending |= partitioned && watch_changed(&mut committed);
        let target = *committed.borrow_and_update();
        if let Some(held) = held.as_mut() {
            pending |= watch_changed(held);
        }
        if pending || !partitioned && cursors.get(PARTITION_NONE) < target {
            let store = context.store.clone();
            let mut owned = sink.take().expect("the sink is returned after each round");
            let metrics = context.metrics.clone();
            let names = context.sink_names.clone();
            let sink_name = name.clone();
            let route = route.clone();
            let before = cursors.clone();
            let result = tokio::task::spawn_blocking(move || {
                let outcome = deliver_jsonl_round(&store, &route, &mut owned, &before, target, &metrics);
                if let Ok((new_cursors, _)) = &outcome {
                    store_jsonl_cursor(&store, &sink_name, &names, new_cursors, &before);
                }
                (owned, outcome)
            })
            .await;
            match result {
                Ok((owned, Ok((new_cursors, full)))) => {
                    sink = Some(owned);
                    cursors = new_cursors;
                    pending = partitioned && full;
                }
                Ok((owned, Err(error))) => {
                    sink = Some(owned);
                    context.metrics.delivery_failures.inc();
                    if *stopping.borrow() {
                        // Stopping: the cursor stays where it is; the next
                        // start (or round) retries.
                        tracing::error!(%error, sink = %name, "JSONL delivery failed; stopping");
                        return;
                    }
                    tracing::error!(%error, sink = %name, "JSONL delivery failed; retrying");
                    pending = partitioned;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => {
                    tracing::error!(%error, "JSONL delivery task failed");
                    return;
                }
            }
            continue;
        }
        if *stopping.borrow() {
            return;
        }
        tokio::select! {
            changed = committed.changed() => match changed {
                Ok(()) => pending = partitioned,
                // The commit thread is gone: drain once more, then stop.
                Err(_) if partitioned => {
                    if closed {
                        return;
                    }
                    closed = true;
                    pending = true;
                }
                Err(_) => if *committed.borrow() <= cursors.get(PARTITION_NONE) { return; },
            },
            _ = stopping.changed() => pending = partitioned,
            changed = async { held.as_mut().expect("checked").changed().await }, if held.is_some() => {
                if changed.is_err() {
                    held = None;
                }
                pending = true;
            }
        }
    }
}

/// Whether `receiver` has a value it has not seen, which it marks seen.
pub fn watch_changed<T>(receiver: &mut watch::Receiver<T>) -> bool {
    let changed = receiver.has_changed().unwrap_or(false);
    receiver.borrow_and_update();
    changed
}

/// On PostgreSQL: follows the partitions this node holds (a partition
/// claimed may hold records to deliver); `None` on sled.
pub fn ownership_receiver(store: &Store) -> Option<watch::Receiver<super::kv::pg::Owned>> {
    match &store.db {
        crate::daemon::kv::Kv::Postgres(pg) => Some(pg.ownership_changes()),
        crate::daemon::kv::Kv::Sled(_) => None,
    }
}

/// After a round: the sink's cursors, then the records every sink has go.
pub(crate) fn store_jsonl_cursor(store: &Store, sink_name: &str, names: &[String], new: &Cursors, before: &Cursors) {
    if let Err(error) = store.set_cursors(sink_name, new, before) {
        tracing::warn!(%error, "could not store the JSONL cursor");
    }
    collect_garbage(store, names);
}

/// One delivery round: appends (and syncs) the records the sink has not
/// had, at most [`CHUNK_RECORDS_MAX`] (on sled those up to `target`);
/// answers the new cursors, not yet stored, and whether the round was
/// full (more may be waiting).
pub(crate) fn deliver_jsonl_round(
    store: &Store,
    route: &Sink,
    sink: &mut JsonlSink,
    cursors: &Cursors,
    target: u64,
    metrics: &Metrics,
) -> Result<(Cursors, bool), String> {
    let super::store::Delivery { items, next, more } = store
        .outbox_after(cursors, target, CHUNK_RECORDS_MAX)
        .map_err(|e| e.to_string())?;
    let mut records: Vec<(u64, String)> = (items.into_iter())
        // Already in the file (appended before a crash, the cursor not yet
        // stored): PostgreSQL, where the file interleaves partitions.
        .filter(|item| !sink.holds(item.seq))
        .map(|item| (item.seq, item.line))
        .collect();
    if route.channel.is_some() {
        records.retain(|(_, line)| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|record| route.takes(&record))
        });
    }
    if !records.is_empty() {
        let started = Instant::now();
        sink.append(&records).map_err(|e| e.to_string())?;
        metrics.delivery_latency.observe(started.elapsed());
        metrics.records_delivered.add(records.len() as u64);
    }
    // Gaps (records of erased customers, records of other channels) are skipped over.
    Ok((next, more))
}

/// Runs a webhook sink until `stopping`.
pub async fn run_webhook(
    context: DispatchContext,
    route: Sink,
    options: WebhookOptions,
    rates: Rates,
    cursor: Cursors,
) {
    let name = route.name();
    let SinkSpec::Webhook(url) = route.spec.clone() else {
        unreachable!("run_webhook runs webhook sinks");
    };
    let client = match webhook_client(&options) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client");
            return;
        }
    };
    let sender = WebhookSender {
        client,
        url,
        route,
        sink_rate: Limiter::new(Duration::from_secs_f64(1.0 / options.rate_per_second.max(0.001))),
        channel_rates: ChannelLimiters::new(&rates),
        options: options.clone(),
        metrics: context.metrics.clone(),
    };
    retry::run(context, name, sender, options, cursor).await;
}

/// The webhook client: rustls with the bundled web roots, plus the private
/// CA roots of `--ca-file`.
pub fn webhook_client(options: &WebhookOptions) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_millis(options.timeout_ms));
    for certificate in ca_certificates(&options.ca_pem)? {
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(|e| error_chain(&e))
}

/// The certificates of a PEM bundle; none when it is empty.
pub fn ca_certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    if pem.is_empty() {
        return Ok(Vec::new());
    }
    let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| error_chain(&e))?;
    if certificates.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certificates)
}

/// An error with its causes: reqwest's own text names only the URL, the
/// cause says why (refused, unknown issuer, timed out).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Keeps a send a delivering sink gave up on, within the dead-letter bound.
pub fn park_dead_letter(
    context: &DispatchContext,
    sink: &str,
    seq: u64,
    record: &serde_json::Value,
    reason: dead::Reason,
    error: &str,
    attempts: u32,
) {
    context.metrics.dead_letters.inc();
    tracing::warn!(
        sink, seq, %error, attempts, reason = reason.as_str(), "delivery parked as a dead letter"
    );
    let failure = dead::Failure {
        sink,
        seq,
        record,
        reason,
        error,
        attempts,
    };
    match dead::park(&context.store, &failure, dead::DEAD_LETTERS_MAX) {
        Ok(dropped) => context.metrics.dead_letters_dropped.add(dropped as u64),
        Err(error) => tracing::error!(%error, "could not store a dead letter"),
    }
}

/// One webhook sink's client, options and rate limiters.
struct WebhookSender {
    client: reqwest::Client,
    url: String,
    route: Sink,
    options: WebhookOptions,
    /// `--webhook-rate`: all requests of this sink.
    sink_rate: Limiter,
    /// `--rate CHANNEL=…`: the requests of each channel.
    channel_rates: ChannelLimiters,
    metrics: Arc<Metrics>,
}

impl WebhookSender {
    /// Waits for the sink's and the channel's next slot.
    async fn wait_for_slot(&mut self, channel: &str, stopping: &mut watch::Receiver<bool>) -> bool {
        let now = tokio::time::Instant::now();
        let sink_wait = self.sink_rate.reserve(now.into_std());
        let wait = sink_wait + self.channel_rates.reserve(channel, (now + sink_wait).into_std());
        if wait.is_zero() {
            return true;
        }
        self.metrics.rate_limited.inc();
        tokio::select! {
            _ = tokio::time::sleep_until(now + wait) => true,
            _ = stopping.changed() => false,
        }
    }

    /// Sends one record once: the same body, `webhook-id` and
    /// `Idempotency-Key` on every try.
    async fn send(&mut self, record: &serde_json::Value, stopping: &mut watch::Receiver<bool>) -> Attempt {
        let key = record
            .get("id")
            .and_then(|i| i.as_str())
            .unwrap_or_default()
            .to_string();
        let channel = record.get("channel").and_then(|c| c.as_str()).unwrap_or_default();
        // The bytes that are signed are the bytes that are sent.
        let body = serde_json::to_vec(record).expect("a JSON value always serializes");
        if !self.wait_for_slot(channel, stopping).await {
            return Attempt::Stopped;
        }
        let started = Instant::now();
        let mut request = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &key)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.options.secret {
            // Standard Webhooks: the id stays across retries, the timestamp
            // and signature are of this attempt.
            let timestamp = chrono::Utc::now().timestamp();
            request = request
                .header("webhook-id", &key)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", webhook_signature(secret, &key, timestamp, &body));
        }
        match request.body(body).send().await {
            Ok(response) if response.status().is_success() => {
                self.metrics.delivery_latency.observe(started.elapsed());
                Attempt::Done
            }
            Ok(response) => {
                self.metrics.delivery_failures.inc();
                let status = response.status();
                let error = format!("HTTP {status}");
                // A client error other than timeout / rate limit will not get better.
                if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                    Attempt::Permanent(error)
                } else {
                    Attempt::Transient(error)
                }
            }
            Err(error) => {
                self.metrics.delivery_failures.inc();
                Attempt::Transient(error_chain(&error))
            }
        }
    }
}

impl Sender for WebhookSender {
    fn takes(&self, record: &serde_json::Value) -> bool {
        record.get("kind").and_then(|k| k.as_str()) == Some("send") && self.route.takes(record)
    }

    fn attempt(
        &mut self,
        record: &serde_json::Value,
        stopping: &mut watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = Attempt> + Send {
        self.send(record, stopping)
    }
}
