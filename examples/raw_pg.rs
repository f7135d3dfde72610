//! The raw PostgreSQL baseline of the daemon benchmark (`examples/loadgen.rs`
//! with `--store` or `--pg-server`): how many rows and transactions per
//! second this server takes as a plain multi-row `INSERT … ; COMMIT` loop,
//! right now, with nothing of journeyc around it.
//!
//! ```text
//! target/release/examples/raw_pg postgres://USER@HOST:PORT/DB \
//!     [--value-bytes 100] [--batch-rows 1000] [--seconds 3]
//! ```
//!
//! The table has the daemon's shape (`journeyc_kv` in `daemon/kv/pg.rs`):
//! `(partition integer, key bytea, value bytea)`, primary key `(partition,
//! key)` and a second index on `key`, so every row pays the same two index
//! insertions a daemon's row does. It is created afresh as `raw_kv` (any
//! older one dropped). Keys are `c` + a customer id (`cr0`, `cr1`, …), every
//! key new, the partition `n % 256`. Each transaction is `BEGIN`, one
//! `INSERT … VALUES (…), (…), …` per 1 000 rows (PostgreSQL's limit on
//! parameters), `COMMIT`; with the server's `synchronous_commit` (its
//! default waits for the WAL flush), as the daemon's commits do.
//! Prints one line:
//! `ROWS rows/s, TX transactions/s (N rows, T transactions, V-byte values, K rows per transaction)`.

use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;

/// Rows per `INSERT` statement: 3 parameters each, well under 65 535.
const STATEMENT_ROWS: usize = 1000;

fn insert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3))
        .collect();
    format!(
        "INSERT INTO raw_kv (partition, key, value) VALUES {}",
        values.join(", ")
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: raw_pg URL [--value-bytes N] [--batch-rows N] [--seconds N]");
    let (mut value_bytes, mut batch_rows, mut seconds) = (100usize, 1000usize, 3u64);
    while let Some(flag) = args.next() {
        let value: u64 = (args.next().and_then(|v| v.parse().ok())).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--value-bytes" => value_bytes = value as usize,
            "--batch-rows" => batch_rows = value.max(1) as usize,
            "--seconds" => seconds = value.max(1),
            other => panic!("unknown argument {other}"),
        }
    }
    let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
        .batch_execute(
            "DROP TABLE IF EXISTS raw_kv;
             CREATE TABLE raw_kv (partition integer NOT NULL, key bytea NOT NULL, value bytea NOT NULL,
                                  PRIMARY KEY (partition, key));
             CREATE INDEX raw_kv_by_key ON raw_kv (key);",
        )
        .await
        .expect("create raw_kv");
    let full = client.prepare(&insert_sql(STATEMENT_ROWS)).await.expect("prepare");
    let tail = match batch_rows % STATEMENT_ROWS {
        0 => None,
        rows => Some(client.prepare(&insert_sql(rows)).await.expect("prepare")),
    };
    let value = vec![7u8; value_bytes];
    let started = Instant::now();
    let (mut rows, mut transactions) = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(seconds) {
        let keys: Vec<(i32, Vec<u8>)> = (rows..rows + batch_rows as u64)
            .map(|n| ((n % 256) as i32, format!("cr{n}").into_bytes()))
            .collect();
        let tx = client.transaction().await.expect("begin");
        for chunk in keys.chunks(STATEMENT_ROWS) {
            let statement = if chunk.len() == STATEMENT_ROWS {
                &full
            } else {
                tail.as_ref().expect("tail")
            };
            let params: Vec<&(dyn ToSql + Sync)> = chunk
                .iter()
                .flat_map(|(partition, key)| [partition as &(dyn ToSql + Sync), key, &value])
                .collect();
            tx.execute(statement, &params).await.expect("insert");
        }
        tx.commit().await.expect("commit");
        rows += batch_rows as u64;
        transactions += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{:.0} rows/s, {:.1} transactions/s ({rows} rows, {transactions} transactions, \
         {value_bytes}-byte values, {batch_rows} rows per transaction)",
        rows as f64 / elapsed,
        transactions as f64 / elapsed
    );
}
