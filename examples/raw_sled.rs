//! The raw sled baseline of the daemon benchmark (`examples/loadgen.rs`):
//! how many keys per second sled takes as `Batch` + `apply_batch` + `flush`
//! on this machine, right now, with nothing of journeyc around it.
//!
//! ```text
//! target/release/examples/raw_sled DIR [--value-bytes 100] [--batch-keys 1000] [--seconds 3]
//! ```
//!
//! Keys are `c` + a customer id (`r0`, `r1`, …), as the daemon's customer
//! records are; every key is new. The store is opened as the daemon opens
//! its own (`daemon/store.rs`: high-throughput mode, 32 MiB page cache).
//! Prints one line: `KEYS_PER_SECOND keys/s (N keys, B batches, V-byte values)`.

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: raw_sled DIR [--value-bytes N] [--batch-keys N] [--seconds N]");
    let (mut value_bytes, mut batch_keys, mut seconds) = (100usize, 1000usize, 3u64);
    while let Some(flag) = args.next() {
        let value: u64 = (args.next().and_then(|v| v.parse().ok())).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--value-bytes" => value_bytes = value as usize,
            "--batch-keys" => batch_keys = value.max(1) as usize,
            "--seconds" => seconds = value.max(1),
            other => panic!("unknown argument {other}"),
        }
    }
    let db = sled::Config::new()
        .path(&dir)
        .cache_capacity(32 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .open()
        .expect("open sled");
    let value = vec![7u8; value_bytes];
    let started = Instant::now();
    let (mut keys, mut batches) = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(seconds) {
        let mut batch = sled::Batch::default();
        for _ in 0..batch_keys {
            batch.insert(format!("cr{keys}").into_bytes(), value.clone());
            keys += 1;
        }
        db.apply_batch(batch).expect("apply the batch");
        db.flush().expect("flush");
        batches += 1;
    }
    let rate = keys as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0} keys/s ({keys} keys, {batches} batches, {value_bytes}-byte values)");
}
