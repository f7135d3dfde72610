//! The daemon on PostgreSQL (`journeyc serve --store postgres://…`): what
//! lands in the database, and a second daemon as a standby. The shared
//! suite (`on_both_stores!` in `harness.rs`) runs intake, GET, DELETE,
//! timers, the outbox and kill -9 on both stores.

use super::harness::*;

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
    assert_eq!(pg.migrations(), super::pg::Postgres::every_migration());
    assert_eq!(
        pg.psql("SELECT value FROM journeyc_settings WHERE name = 'partitions'")
            .trim(),
        "256"
    );
    // A customer's records (state `c`, stats groups `a`) share one partition
    // in 0..256; the current version (metadata) names no customer.
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
        pg.psql("SELECT partition FROM journeyc_kv WHERE key = 'mcurrent'::bytea")
            .trim(),
        "-1"
    );

    // A second daemon on the same database is a standby while the first
    // runs: its health names the owner, it reads customers, it takes
    // intake into the inbox (`any_node.rs`: the rest it serves).
    let other = tempfile::tempdir().expect("tempdir");
    let second = Daemon::start(
        &env.workspace(),
        other.path(),
        &env.store_args().iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let health = second.request_with("GET", "/healthz", None, None);
    assert_eq!(health.status, 200, "{}", health.body);
    let health = health.json();
    assert_eq!(health["status"], "standby", "{health}");
    assert_eq!(health["epoch"], 1, "{health}");
    let owner = pg.psql("SELECT owner FROM journeyc_leases WHERE partition = -1");
    assert_eq!(partitions_held_with_the_store(pg), "256 1 1");
    assert_eq!(health["owner"].as_str(), Some(owner.trim()), "{health}");
    assert_ne!(health["node"], health["owner"], "{health}");
    // Intake at the standby goes through the inbox to the owner.
    assert_eq!(second.post("/v1/track", &ping("u3", "m3", 1)).status, 200);
    eventually("the standby's call applied by the owner", || {
        (daemon.get("/v1/customers/u3").status == 200).then_some(())
    });
    let read = second.get("/v1/customers/u2");
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json(), daemon.get("/v1/customers/u2").json());
    assert_eq!(second.get("/v1/customers/nobody").status, 404);
    assert_eq!(
        second
            .request_with("GET", "/v1/customers/u2", None, Some("Bearer wrong"))
            .status,
        401
    );
    // Aggregates from the store's counters, as the owner answers them;
    // the owner's writes handed to it and answered as it answers them.
    assert_eq!(second.get("/v1/journeys").json(), daemon.get("/v1/journeys").json());
    let retried = second.post("/v1/outbox/retry", "");
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.json(), daemon.post("/v1/outbox/retry", "").json());

    // The owner stops (releasing the lease): the standby takes over at
    // epoch 2 and serves what the first one committed.
    assert_eq!(daemon.terminate(), Some(0));
    eventually("the standby's takeover", || {
        let health = second.request_with("GET", "/healthz", None, None);
        (health.status == 200 && health.json()["status"] == "ok").then_some(())
    });
    assert_eq!(
        pg.psql("SELECT epoch FROM journeyc_leases WHERE partition = -1").trim(),
        "2"
    );
    // With the store's lease it took every partition's, each at epoch 2.
    assert_eq!(partitions_held_with_the_store(pg), "256 2 2");
    assert_ne!(
        pg.psql("SELECT owner FROM journeyc_leases WHERE partition = -1").trim(),
        owner.trim()
    );
    assert_eq!(second.get("/v1/customers/u2").status, 200);
    assert_eq!(second.terminate(), Some(0));

    // Started again: migrations are not applied twice, the customers are
    // there, the lease is taken at the next epoch.
    let daemon = env.start(&[]);
    assert_eq!(
        pg.psql("SELECT count(*) FROM journeyc_migrations").trim(),
        journeyc::daemon::kv::pg::MIGRATIONS.len().to_string()
    );
    assert_eq!(daemon.get("/v1/customers/u2").status, 200);
    assert_eq!(
        pg.psql("SELECT epoch FROM journeyc_leases WHERE partition = -1").trim(),
        "3"
    );
    assert_eq!(partitions_held_with_the_store(pg), "256 3 3");
    assert_eq!(daemon.terminate(), Some(0));
}

/// How many partition leases (0..P) the holder of the store's lease holds,
/// and their lowest and highest epochs.
fn partitions_held_with_the_store(pg: &super::pg::Postgres) -> String {
    pg.psql(
        "SELECT count(*) || ' ' || min(epoch) || ' ' || max(epoch) FROM journeyc_leases \
         WHERE partition >= 0 AND owner = (SELECT owner FROM journeyc_leases WHERE partition = -1)",
    )
    .trim()
    .to_string()
}

/// The transactions committed in the test's database so far, read once no
/// session is left in it (a backend's statistics are in at its exit), from
/// the `postgres` database so that the reading adds none.
fn commits_when_idle(pg: &super::pg::Postgres) -> i64 {
    let database = pg.url().rsplit('/').next().expect("a database").to_string();
    eventually("the daemon's sessions ended", || {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'");
        (pg.psql_in("postgres", &sql).trim() == "0").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let sql = format!("SELECT xact_commit FROM pg_stat_database WHERE datname = '{database}'");
    pg.psql_in("postgres", &sql).trim().parse().expect("xact_commit")
}

/// A group reads its records in a query or two, not one per event: 500
/// events to 500 new customers in one request, and their 500 wake-ups two
/// seconds later, cost the database a few dozen transactions more than a
/// daemon started and stopped with nothing to do (one read per record
/// was 3 per event at intake and 2 per wake-up).
#[test]
fn a_group_reads_its_customers_in_a_few_transactions_not_one_per_event() {
    if super::pg::skip_requested() {
        eprintln!("JOURNEYC_SKIP_PG=1: PostgreSQL test skipped");
        return;
    }
    const N: i64 = 500;
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    // Idle: started, one request, stopped.
    let start = commits_when_idle(pg);
    let daemon = env.start(&[]);
    assert_eq!(daemon.get("/v1/customers/nobody").status, 404);
    assert_eq!(daemon.terminate(), Some(0));
    let after_idle = commits_when_idle(pg);
    let idle = after_idle - start;

    let daemon = env.start(&[]);
    let calls: Vec<String> = (0..N)
        .map(|i| {
            format!(
                r#"{{"type":"track","userId":"u{i}","event":"bought","properties":{{"amount":1}},"messageId":"m{i}"}}"#
            )
        })
        .collect();
    let response = daemon.post("/v1/batch", &format!(r#"{{"batch":[{}]}}"#, calls.join(",")));
    assert_eq!(response.status, 200, "{}", response.body);
    // Each look at the metrics reads a few records of its own.
    let mut looks = 0;
    eventually("the wake-ups fired", || {
        looks += 1;
        std::thread::sleep(std::time::Duration::from_millis(500));
        let metrics = daemon.get("/metrics").body;
        let fired = metrics
            .lines()
            .find_map(|line| line.strip_prefix("journeyc_timers_fired_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        (fired >= N as f64).then_some(())
    });
    assert_eq!(daemon.get("/v1/customers/nobody").status, 404);
    // Every record the groups read had been fetched with the rest.
    let metrics = daemon.get("/metrics").body;
    let unfetched = metrics
        .lines()
        .find_map(|line| line.strip_prefix("journeyc_group_reads_unfetched_total "))
        .map(str::trim);
    assert_eq!(unfetched, Some("0"), "{metrics}");
    assert_eq!(daemon.terminate(), Some(0));
    let busy = commits_when_idle(pg) - after_idle;
    let extra = busy - idle;
    let allowed = N / 5 + 12 * (looks + 1);
    eprintln!("{N} events and wake-ups: {busy} transactions, {idle} idle, {looks} looks at the metrics");
    assert!(
        extra <= allowed,
        "{extra} transactions beyond an idle run ({idle}) for {N} events and {N} wake-ups ({looks} looks at the \
         metrics): more than {allowed}"
    );
    let customers = pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 99");
    assert_eq!(customers.trim(), N.to_string());
}
