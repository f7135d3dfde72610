//! The timer task: fires due wake-ups in due-time order with the real clock.
//!
//! The timer index (`t/` keys, due time first, many customers per key) is read
//! in order; everything due is handed to the commit thread as `Wake` jobs of
//! whole entries naming about [`WAKES_PER_JOB_MAX`] customers, up to
//! [`JOBS_IN_FLIGHT_MAX`] at a time; the commit thread deletes each entry
//! handed over. Each scan continues after the last key handed over, and a pass
//! ends by waiting for its jobs and rescanning from the start (an entry handed
//! over twice fires nothing: the commit thread fires a customer only if its
//! stored record still names that entry). Overdue timers
//! (after downtime) fire the same way, oldest first, each at its own due time.
//! On PostgreSQL the task reads the chunks of the partitions this node holds
//! only (`Store::due_timers_after`); a chunk lists customers of one partition,
//! so one not held (taken over, or not yet claimed) waits for its owner and
//! holds up nothing else, and a new owner fires the old one's due chunks.

use super::commit::Committer;
use super::metrics::Metrics;
use super::store::Store;
use crate::runtime::Millis;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Customers woken per commit job (whole entries: a job may have up to
/// [`super::store::TIMER_CHUNK_MAX`] more).
pub const WAKES_PER_JOB_MAX: usize = 4096;
/// The longest the task sleeps without looking again (clock jumps, safety).
const IDLE_SLEEP_MS_MAX: u64 = 5_000;

/// The wall clock, in milliseconds since the epoch.
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Wake jobs handed to the commit thread and not yet committed: the next
/// scan overlaps with their flush. (A wake-up handed over twice is harmless:
/// the commit thread skips a customer that is no longer due.)
const JOBS_IN_FLIGHT_MAX: usize = 4;

pub async fn run(
    store: Store,
    committer: Committer,
    timers_changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut in_flight: std::collections::VecDeque<tokio::task::JoinHandle<()>> = Default::default();
    // The last timer key handed over in this pass: the next scan starts after it.
    let mut after: Option<Vec<u8>> = None;
    loop {
        if *stopping.borrow() {
            for job in in_flight {
                let _ = job.await;
            }
            return;
        }
        let now = now_ms();
        let due = {
            let store = store.clone();
            let after = after.clone();
            tokio::task::spawn_blocking(move || store.due_timers_after(after.as_deref(), now, WAKES_PER_JOB_MAX)).await
        };
        let due = match due {
            Ok(Ok(due)) => due,
            Ok(Err(error)) => {
                tracing::error!(%error, "reading the timer index failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(_) => return,
        };
        if let Some(last) = due.last() {
            after = Some(last.key());
            while in_flight.len() >= JOBS_IN_FLIGHT_MAX {
                if let Some(job) = in_flight.pop_front() {
                    let _ = job.await;
                }
            }
            let committer = committer.clone();
            let metrics = metrics.clone();
            in_flight.push_back(tokio::spawn(async move {
                match committer.wake(due).await {
                    Ok(fired) => metrics.timers_fired.add(fired as u64),
                    Err(error) => {
                        tracing::warn!(%error, "timer wake-ups not committed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }));
            continue;
        }
        if after.is_some() || !in_flight.is_empty() {
            // End of a pass: let it commit, then look again from the start
            // (wake-ups may have armed timers that are already due).
            for job in in_flight.drain(..) {
                let _ = job.await;
            }
            after = None;
            continue;
        }
        let sleep_ms = match store.first_timer() {
            Ok(Some(at)) => (at - now).clamp(1, IDLE_SLEEP_MS_MAX as i64) as u64,
            _ => IDLE_SLEEP_MS_MAX,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {},
            _ = timers_changed.notified() => {},
            _ = stopping.changed() => {},
        }
    }
}
