//! The timer task: fires due wake-ups in due-time order with the real clock.
//!
//! The timer index (`t/` keys, due time first) is read in order; everything due
//! is handed to the commit thread as `Wake` jobs of at most
//! [`WAKES_PER_JOB_MAX`] customers, and the next scan starts only after the
//! job is committed, so a wake-up is never handed over twice. Overdue timers
//! (after downtime) fire the same way, oldest first, each at its own due time.

use super::commit::Committer;
use super::metrics::Metrics;
use super::store::Store;
use crate::runtime::Millis;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Customers woken per commit job.
pub const WAKES_PER_JOB_MAX: usize = 4096;
/// The longest the task sleeps without looking again (clock jumps, safety).
const IDLE_SLEEP_MS_MAX: u64 = 5_000;

/// The wall clock, in milliseconds since the epoch.
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

pub async fn run(
    store: Store,
    committer: Committer,
    timers_changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        if *stopping.borrow() {
            return;
        }
        let now = now_ms();
        let due = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.due_timers(now, WAKES_PER_JOB_MAX)).await
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
        if !due.is_empty() {
            match committer.wake(due).await {
                Ok(fired) => metrics.timers_fired.add(fired as u64),
                Err(error) => {
                    tracing::warn!(%error, "timer wake-ups not committed");
                    if *stopping.borrow() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            continue;
        }
        let sleep_ms = match store.first_timer() {
            Ok(Some((at, _))) => (at - now).clamp(1, IDLE_SLEEP_MS_MAX as i64) as u64,
            _ => IDLE_SLEEP_MS_MAX,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {},
            _ = timers_changed.notified() => {},
            _ = stopping.changed() => {},
        }
    }
}
