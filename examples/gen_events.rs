//! Writes a deterministic Segment event stream for the example workspace
//! (`journeys/`), for benchmarking `journeyc simulate` and the daemon.
//!
//! cargo run --release --example gen_events -- EVENTS CUSTOMERS > events.jsonl

use std::io::Write as _;

fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let customers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000).max(1);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let zones = ["UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin", "Asia/Tehran"];
    let plans = ["free", "pro", "team"];
    let start: i64 = 1_772_352_000; // 2026-03-01T08:00:00Z
    let mut seed: u64 = 0x5eed;
    let mut next = |bound: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % bound
    };
    let time = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    // One identify per customer, then tracks spread over 30 days, each
    // customer's events in time order, customers interleaved.
    let per_customer = events / customers;
    let mut clocks: Vec<i64> = (0..customers).map(|_| start + next(3_600) as i64).collect();
    let mut message = 0u64;
    for round in 0..per_customer.max(1) {
        for (customer, clock) in clocks.iter_mut().enumerate() {
            message += 1;
            let at = time(*clock);
            let line = if round == 0 {
                format!(
                    "{{\"type\":\"identify\",\"userId\":\"c{customer}\",\"traits\":{{\"email\":\"c{customer}@example.com\",\"plan\":\"{}\",\"timezone\":\"{}\",\"lifetime_value\":{},\"points\":0,\"createdAt\":\"{at}\",\"email_opt_in\":{},\"push_opt_in\":{}}},\"timestamp\":\"{at}\",\"messageId\":\"m{message}\"}}",
                    plans[next(3) as usize],
                    zones[next(5) as usize],
                    next(1000),
                    next(4) > 0,
                    next(2) > 0
                )
            } else {
                let body = match next(8) {
                    0 => "\"event\":\"Signed Up\",\"properties\":{\"source\":\"ads\"}".to_string(),
                    1 => format!(
                        "\"event\":\"Order Completed\",\"properties\":{{\"order_id\":\"m{message}\",\"total\":{}}}",
                        next(100)
                    ),
                    2 | 3 => "\"event\":\"Signed In\"".to_string(),
                    4 => format!(
                        "\"event\":\"Checkout Started\",\"properties\":{{\"order_id\":\"m{message}\",\"value\":{}}}",
                        next(100)
                    ),
                    5 => format!("\"event\":\"NPS Answered\",\"properties\":{{\"score\":{}}}", next(11)),
                    _ => "\"event\":\"Project Created\",\"properties\":{\"name\":\"p\"}".to_string(),
                };
                format!("{{\"type\":\"track\",\"userId\":\"c{customer}\",{body},\"timestamp\":\"{at}\",\"messageId\":\"m{message}\"}}")
            };
            if writeln!(out, "{line}").is_err() {
                return;
            }
            *clock += next(3 * 86_400) as i64;
        }
    }
    let _ = out.flush();
}
