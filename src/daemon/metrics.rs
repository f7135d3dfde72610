//! Process metrics in the Prometheus text format (hand-rolled: a handful of
//! counters and histograms do not justify a metrics framework).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in BUCKETS_SECONDS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in BUCKETS_SECONDS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1_000_000.0
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every metric of the daemon.
#[derive(Debug, Default)]
pub struct Metrics {
    pub events_accepted: Counter,
    pub events_rejected: Counter,
    pub requests_rejected: Counter,
    pub steps_executed: Counter,
    pub timers_fired: Counter,
    pub sends_enqueued: Counter,
    pub records_delivered: Counter,
    pub delivery_failures: Counter,
    pub dead_letters: Counter,
    /// Dead letters removed to keep the store's bound (the oldest first).
    pub dead_letters_dropped: Counter,
    /// Delivery requests that waited for a rate limit's slot.
    pub rate_limited: Counter,
    pub panics: Counter,
    pub customer_errors: Counter,
    pub reloads: Counter,
    pub reloads_refused: Counter,
    /// Online erasure compactions (`--erasure-within`), and the milliseconds
    /// intake and delivery were paused for them in all.
    pub erasure_compactions: Counter,
    pub erasure_pause_ms: Counter,
    /// Point reads of group commits that were not fetched with the rest of
    /// the group's before it ran (`store::Prefetched`): each a round trip
    /// of its own on PostgreSQL.
    pub reads_unfetched: Counter,
    pub intake_latency: Histogram,
    pub commit_latency: Histogram,
    pub delivery_latency: Histogram,
}

/// Gauges read at render time.
pub struct Gauges {
    pub timers_pending: i64,
    pub outbox_depth: u64,
    /// Customers with a fault record, and those of them parked.
    pub customers_failing: i64,
    pub customers_parked: i64,
    /// Dead letters in the store (parked or queued for another try).
    pub dead_letters: usize,
    /// Sends waiting in the sinks' retry sets (`retry.rs`), held-back ones included.
    pub retry_waiting: usize,
    /// Engagement events naming no remembered send, by engagement
    /// (`runtime::stats::unattributed`).
    pub unattributed: std::collections::BTreeMap<String, u64>,
}

impl Metrics {
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &Counter); 18] = [
            (
                "journeyc_events_accepted_total",
                "Events durably accepted.",
                &self.events_accepted,
            ),
            (
                "journeyc_events_rejected_total",
                "Events refused as invalid.",
                &self.events_rejected,
            ),
            (
                "journeyc_requests_rejected_total",
                "HTTP requests refused (auth, size, JSON, validation).",
                &self.requests_rejected,
            ),
            (
                "journeyc_steps_executed_total",
                "Interpreter steps (inputs applied, wake-ups included).",
                &self.steps_executed,
            ),
            (
                "journeyc_group_reads_unfetched_total",
                "Point reads of group commits not fetched with the group's others (one round trip each on PostgreSQL).",
                &self.reads_unfetched,
            ),
            (
                "journeyc_timers_fired_total",
                "Timer wake-ups applied.",
                &self.timers_fired,
            ),
            (
                "journeyc_sends_enqueued_total",
                "Send records written to the outbox.",
                &self.sends_enqueued,
            ),
            (
                "journeyc_records_delivered_total",
                "Outbox records delivered to sinks.",
                &self.records_delivered,
            ),
            (
                "journeyc_delivery_failures_total",
                "Failed delivery attempts (retried or dead-lettered).",
                &self.delivery_failures,
            ),
            (
                "journeyc_dead_letters_total",
                "Deliveries given up and parked as dead letters.",
                &self.dead_letters,
            ),
            (
                "journeyc_dead_letters_dropped_total",
                "Oldest dead letters removed because the store holds at most DEAD_LETTERS_MAX.",
                &self.dead_letters_dropped,
            ),
            (
                "journeyc_rate_limited_total",
                "Delivery requests that waited for their channel's or sink's rate limit.",
                &self.rate_limited,
            ),
            (
                "journeyc_internal_errors_total",
                "Requests refused because applying them panicked outside the interpreter.",
                &self.panics,
            ),
            (
                "journeyc_customer_errors_total",
                "Inputs that failed for one customer (first failures and failed retries).",
                &self.customer_errors,
            ),
            ("journeyc_reloads_total", "Workspace reloads applied.", &self.reloads),
            (
                "journeyc_reloads_refused_total",
                "Workspace reloads refused (check errors).",
                &self.reloads_refused,
            ),
            (
                "journeyc_erasure_compactions_total",
                "Erasure compactions run while the daemon kept running (--erasure-within).",
                &self.erasure_compactions,
            ),
            (
                "journeyc_erasure_pause_milliseconds_total",
                "Time intake and delivery waited for those compactions.",
                &self.erasure_pause_ms,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP journeyc_timers_pending Customers waiting on a timer.\n# TYPE journeyc_timers_pending gauge\njourneyc_timers_pending {}",
            gauges.timers_pending
        );
        let _ = writeln!(
            out,
            "# HELP journeyc_outbox_depth Outbox records not yet delivered to every sink.\n# TYPE journeyc_outbox_depth gauge\njourneyc_outbox_depth {}",
            gauges.outbox_depth
        );
        let _ = writeln!(
            out,
            "# HELP journeyc_customers_failing Customers whose input failed and is held for a retry (parked ones included).\n# TYPE journeyc_customers_failing gauge\njourneyc_customers_failing {}",
            gauges.customers_failing
        );
        let _ = writeln!(
            out,
            "# HELP journeyc_customers_parked Failing customers that are no longer retried on their own.\n# TYPE journeyc_customers_parked gauge\njourneyc_customers_parked {}",
            gauges.customers_parked
        );
        let _ = writeln!(
            out,
            "# HELP journeyc_outbox_dead_letters Deliveries given up and kept for `POST /v1/outbox/retry`.\n# TYPE journeyc_outbox_dead_letters gauge\njourneyc_outbox_dead_letters {}",
            gauges.dead_letters
        );
        let _ = writeln!(
            out,
            "# HELP journeyc_outbox_retry_waiting Sends waiting in a sink's retry set, held-back ones of the same customer included.\n# TYPE journeyc_outbox_retry_waiting gauge\njourneyc_outbox_retry_waiting {}",
            gauges.retry_waiting
        );
        let _ = writeln!(
            out,
            "# HELP journeyc_engagement_unattributed_total Engagement events naming no remembered send, by engagement.\n# TYPE journeyc_engagement_unattributed_total counter"
        );
        for (engagement, count) in &gauges.unattributed {
            let _ = writeln!(
                out,
                "journeyc_engagement_unattributed_total{{engagement=\"{engagement}\"}} {count}"
            );
        }
        self.intake_latency.render(
            &mut out,
            "journeyc_intake_latency_seconds",
            "Time from request received to durable acknowledgement.",
        );
        self.commit_latency.render(
            &mut out,
            "journeyc_commit_latency_seconds",
            "Time to apply and flush one group commit.",
        );
        self.delivery_latency.render(
            &mut out,
            "journeyc_delivery_latency_seconds",
            "Time to write and sync one chunk of records to a sink.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.events_accepted.add(3);
        metrics.intake_latency.observe(Duration::from_millis(3));
        let text = metrics.render(&Gauges {
            timers_pending: 2,
            outbox_depth: 1,
            customers_failing: 3,
            customers_parked: 1,
            dead_letters: 4,
            retry_waiting: 2,
            unattributed: std::collections::BTreeMap::from([("opened".to_string(), 4)]),
        });
        assert!(text.contains("journeyc_events_accepted_total 3"));
        assert!(text.contains("journeyc_intake_latency_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("journeyc_intake_latency_seconds_bucket{le=\"0.002\"} 0"));
        assert!(text.contains("journeyc_timers_pending 2"));
        assert!(text.contains("journeyc_customers_failing 3"));
        assert!(text.contains("journeyc_customers_parked 1"));
        assert!(text.contains("journeyc_outbox_dead_letters 4"));
        assert!(text.contains("journeyc_outbox_retry_waiting 2"));
        assert!(text.contains("journeyc_engagement_unattributed_total{engagement=\"opened\"} 4"));
    }
}
