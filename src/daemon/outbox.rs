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

use super::metrics::Metrics;
use super::sinks::{webhook_signature, JsonlSink, Sink, SinkSpec, WebhookOptions};
use super::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Records read from the store per delivery round.
pub const CHUNK_RECORDS_MAX: usize = 2048;

/// Deletes outbox records every configured sink has.
pub fn collect_garbage(store: &Store, sinks: &[String]) {
    let mut lowest = u64::MAX;
    for sink in sinks {
        match store.cursor(sink) {
            Ok(Some(seq)) => lowest = lowest.min(seq),
            _ => return,
        }
    }
    if lowest != u64::MAX {
        if let Err(error) = store.remove_outbox_through(lowest) {
            tracing::warn!(%error, "outbox garbage collection failed");
        }
    }
}

/// Where a sink starts: after what it already has.
pub fn start_cursor(store: &Store, sink: &str, file_tail: Option<u64>) -> u64 {
    let stored = store.cursor(sink).ok().flatten();
    match (stored, file_tail) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        // A new sink starts at the oldest record still in the outbox.
        (None, None) => store
            .first_outbox_seq()
            .ok()
            .flatten()
            .map_or(0, |s| s.saturating_sub(1)),
    }
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
}

/// Runs the JSONL sink until `stopping` (after a final drain).
pub async fn run_jsonl(context: DispatchContext, route: Sink, sink: JsonlSink, mut cursor: u64) {
    let name = route.name();
    let route = Arc::new(route);
    let mut committed = context.committed.clone();
    let mut stopping = context.stopping.clone();
    let mut sink = Some(sink);
    loop {
        let target = *committed.borrow_and_update();
        if cursor < target {
            let store = context.store.clone();
            let mut owned = sink.take().expect("the sink is returned after each round");
            let metrics = context.metrics.clone();
            let names = context.sink_names.clone();
            let sink_name = name.clone();
            let route = route.clone();
            let result = tokio::task::spawn_blocking(move || {
                let outcome = deliver_jsonl_round(&store, &route, &mut owned, cursor, target, &metrics);
                if let Ok(new_cursor) = &outcome {
                    if let Err(error) = store.set_cursor(&sink_name, *new_cursor) {
                        tracing::warn!(%error, "could not store the JSONL cursor");
                    }
                    collect_garbage(&store, &names);
                }
                (owned, outcome)
            })
            .await;
            match result {
                Ok((owned, Ok(new_cursor))) => {
                    sink = Some(owned);
                    cursor = new_cursor;
                }
                Ok((owned, Err(error))) => {
                    sink = Some(owned);
                    context.metrics.delivery_failures.inc();
                    tracing::error!(%error, sink = %name, "JSONL delivery failed; retrying");
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
            changed = committed.changed() => if changed.is_err() {
                // The commit thread is gone: drain once more, then stop.
                if *committed.borrow() <= cursor { return; }
            },
            _ = stopping.changed() => {},
        }
    }
}

fn deliver_jsonl_round(
    store: &Store,
    route: &Sink,
    sink: &mut JsonlSink,
    cursor: u64,
    target: u64,
    metrics: &Metrics,
) -> Result<u64, String> {
    let records = store
        .outbox_range(cursor + 1, target, CHUNK_RECORDS_MAX)
        .map_err(|e| e.to_string())?;
    let complete = records.len() < CHUNK_RECORDS_MAX;
    let last_seq = records.last().map(|(seq, _)| *seq);
    let mut records = records;
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
    Ok(if complete {
        target
    } else {
        last_seq.map_or(target, |seq| seq)
    })
}

/// Runs a webhook sink until `stopping`.
pub async fn run_webhook(context: DispatchContext, route: Sink, options: WebhookOptions, mut cursor: u64) {
    let name = route.name();
    let SinkSpec::Webhook(url) = route.spec.clone() else {
        unreachable!("run_webhook runs webhook sinks");
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(options.timeout_ms))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client");
            return;
        }
    };
    let mut committed = context.committed.clone();
    let mut stopping = context.stopping.clone();
    let interval = Duration::from_secs_f64(1.0 / options.rate_per_second.max(0.001));
    let mut next_slot = tokio::time::Instant::now();
    loop {
        if *stopping.borrow() {
            return;
        }
        let target = *committed.borrow_and_update();
        if cursor < target {
            let records = match context.store.outbox_range(cursor + 1, target, 256) {
                Ok(records) => records,
                Err(error) => {
                    tracing::error!(%error, "reading the outbox failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let complete = records.len() < 256;
            for (seq, line) in &records {
                let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if record.get("kind").and_then(|k| k.as_str()) == Some("send") && route.takes(&record) {
                    let delivered = deliver_webhook(
                        &client,
                        &url,
                        &record,
                        &options,
                        interval,
                        &mut next_slot,
                        &mut stopping,
                        &context.metrics,
                    )
                    .await;
                    match delivered {
                        Delivery::Done => context.metrics.records_delivered.inc(),
                        Delivery::Stopped => return,
                        Delivery::GaveUp { error, attempts } => {
                            park_dead_letter(&context, &name, *seq, &record, &error, attempts);
                        }
                    }
                }
                cursor = *seq;
                if let Err(error) = context.store.set_cursor(&name, cursor) {
                    tracing::warn!(%error, "could not store the webhook cursor");
                }
            }
            if complete {
                cursor = target;
                let _ = context.store.set_cursor(&name, cursor);
            }
            collect_garbage(&context.store, &context.sink_names);
            continue;
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return; },
            _ = stopping.changed() => {},
        }
    }
}

/// Keeps a record a sink gave up on in the dead-letter store.
pub fn park_dead_letter(
    context: &DispatchContext,
    sink: &str,
    seq: u64,
    record: &serde_json::Value,
    error: &str,
    attempts: u32,
) {
    context.metrics.dead_letters.inc();
    tracing::warn!(sink, seq, %error, attempts, "delivery parked as a dead letter");
    let letter = serde_json::json!({
        "sink": sink, "seq": seq, "attempts": attempts, "error": error, "record": record,
    });
    if let Err(error) = context.store.add_dead_letter(sink, seq, &letter) {
        tracing::error!(%error, "could not store a dead letter");
    }
}

enum Delivery {
    Done,
    Stopped,
    GaveUp { error: String, attempts: u32 },
}

#[allow(clippy::too_many_arguments)]
async fn deliver_webhook(
    client: &reqwest::Client,
    url: &str,
    record: &serde_json::Value,
    options: &WebhookOptions,
    interval: Duration,
    next_slot: &mut tokio::time::Instant,
    stopping: &mut watch::Receiver<bool>,
    metrics: &Metrics,
) -> Delivery {
    let key = record
        .get("id")
        .and_then(|i| i.as_str())
        .unwrap_or_default()
        .to_string();
    // The bytes that are signed are the bytes that are sent.
    let body = serde_json::to_vec(record).expect("a JSON value always serializes");
    let mut last_error = String::new();
    for attempt in 1..=options.attempts_max.max(1) {
        if attempt > 1 {
            let delay = options.backoff(attempt - 1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {},
                _ = stopping.changed() => return Delivery::Stopped,
            }
        }
        // Per-sink rate limit: one request per interval.
        let now = tokio::time::Instant::now();
        if *next_slot > now {
            tokio::time::sleep_until(*next_slot).await;
        }
        *next_slot = tokio::time::Instant::now().max(*next_slot) + interval;
        let started = Instant::now();
        let mut request = client
            .post(url)
            .header("Idempotency-Key", &key)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &options.secret {
            // Standard Webhooks: the id stays across retries, the timestamp
            // and signature are of this attempt.
            let timestamp = chrono::Utc::now().timestamp();
            request = request
                .header("webhook-id", &key)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", webhook_signature(secret, &key, timestamp, &body));
        }
        let response = request.body(body.clone()).send().await;
        match response {
            Ok(response) if response.status().is_success() => {
                metrics.delivery_latency.observe(started.elapsed());
                return Delivery::Done;
            }
            Ok(response) => {
                metrics.delivery_failures.inc();
                let status = response.status();
                last_error = format!("HTTP {status}");
                // A client error other than timeout / rate limit will not get better.
                if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                    return Delivery::GaveUp {
                        error: last_error,
                        attempts: attempt,
                    };
                }
            }
            Err(error) => {
                metrics.delivery_failures.inc();
                last_error = error.to_string();
            }
        }
    }
    Delivery::GaveUp {
        error: last_error,
        attempts: options.attempts_max.max(1),
    }
}
