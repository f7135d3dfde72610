//! The daemon on PostgreSQL (`journeyc serve --store postgres://…`): what
//! lands in the database, and the one-daemon-per-database lock. The shared
//! suite (`on_both_stores!` in `harness.rs`) runs intake, GET, DELETE,
//! timers, the outbox and kill -9 on both stores.

use super::harness::*;
use std::process::{Command, Stdio};
use std::time::Instant;

#[test]
fn records_land_in_partitioned_rows_after_the_migrations() {
    if super::pg::skip_requested() {
        eprintln!("JOURNEYC_SKIP_PG=1: PostgreSQL test skipped");
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let daemon = env.start(&[]);
    for (customer, id) in [("u1", "m1"), ("u2", "m2")] {
        let bought =
            format!(r#"{{"userId":"{customer}","event":"bought","properties":{{"amount":1}},"messageId":"{id}"}}"#);
        assert_eq!(daemon.post("/v1/track", &bought).status, 200);
    }
    // Acked means committed: visible to another session at once.
    assert_eq!(
        pg.psql("SELECT version FROM journeyc_migrations ORDER BY version")
            .trim(),
        "1"
    );
    assert_eq!(
        pg.psql("SELECT value FROM journeyc_settings WHERE name = 'partitions'")
            .trim(),
        "256"
    );
    // A customer's records (state `c`, stats groups `a`) share one partition
    // in 0..256; the sequence number names no customer.
    let partition_of = |customer: &str| -> Vec<i64> {
        let sql = format!(
            "SELECT DISTINCT partition FROM journeyc_kv WHERE get_byte(key, 0) IN (99, 97) \
             AND substr(key, 2, {n}) = '{customer}'::bytea AND (length(key) = {n} + 1 OR get_byte(key, {n} + 1) = 0)",
            n = customer.len()
        );
        pg.psql(&sql)
            .lines()
            .map(|l| l.trim().parse().expect("a partition"))
            .collect()
    };
    for customer in ["u1", "u2"] {
        let partitions = partition_of(customer);
        assert_eq!(partitions.len(), 1, "{customer}: {partitions:?}");
        assert!((0..256).contains(&partitions[0]), "{customer}: {partitions:?}");
    }
    let counts = pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 99");
    assert_eq!(counts.trim(), "2");
    assert_eq!(
        pg.psql("SELECT partition FROM journeyc_kv WHERE key = 'mseq'::bytea")
            .trim(),
        "-1"
    );

    // A second daemon on the same database is refused while the first runs.
    let other = tempfile::tempdir().expect("tempdir");
    let mut second = Command::new(binary())
        .arg("serve")
        .arg(env.workspace())
        .arg("--data")
        .arg(other.path())
        .args(["--store", &pg.url(), "--listen", "127.0.0.1:0", "--token", TOKEN])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second daemon");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = second.kill();
            panic!("a second daemon on the same database kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("another journeyc daemon"), "{stderr}");

    // Stopped and started again: migrations are not applied twice, the
    // customers are there.
    assert_eq!(daemon.terminate(), Some(0));
    let daemon = env.start(&[]);
    assert_eq!(pg.psql("SELECT count(*) FROM journeyc_migrations").trim(), "1");
    assert_eq!(daemon.get("/v1/customers/u2").status, 200);
    assert_eq!(daemon.terminate(), Some(0));
}
