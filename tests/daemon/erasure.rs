//! Erasure leaves no byte of the customer in the data directory: after a
//! clean stop, and after a kill -9 followed by a restart.

use super::harness::*;
use std::path::Path;

const ERASE_WORKSPACE: &str = r#"
customer {
  email: string?
}
event ping { n: int }
message hello email { subject "For {{ customer.email }}" body "Your code is ZEBRA-{{ event.n }}" }
journey pinger {
  trigger ping
  entry always
  send hello
}
"#;

/// Files under `dir` (the harness's own stderr log aside) that contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir").flatten() {
                stack.push(entry.path());
            }
        } else if path.file_name().is_some_and(|n| n != "daemon.log") {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

fn customer_with_a_send(daemon: &Daemon, env: &Env, id: &str, email: &str, n: i64) {
    let identify = format!(r#"{{"userId":"{id}","traits":{{"email":"{email}"}}}}"#);
    assert_eq!(daemon.post("/v1/identify", &identify).status, 200);
    assert_eq!(daemon.post("/v1/track", &ping(id, &format!("{id}-m"), n)).status, 200);
    eventually("the send in the sink", || {
        sink_lines(&env.sends())
            .iter()
            .any(|l| l["customer"] == id && l["kind"] == "send")
            .then_some(())
    });
}

#[test]
fn an_erased_customer_leaves_no_byte_in_the_data_directory() {
    let env = Env::new(ERASE_WORKSPACE);
    let data = env.data();
    let daemon = env.start(&[]);
    customer_with_a_send(&daemon, &env, "erase-me-7f3a", "ada@example.org", 424_242);
    customer_with_a_send(&daemon, &env, "keeper-1", "kim@example.org", 777_001);
    // A refused call is kept (with its body) in the rejected store.
    let refused = r#"{"userId":"erase-me-7f3a","event":"ping","properties":{"n":"PENGUIN-31"}}"#;
    assert_eq!(daemon.post("/v1/track", refused).status, 422);
    // Without erasure, all of it is on disk (so the checks below can fail).
    for needle in ["erase-me-7f3a", "ada@example.org", "ZEBRA-424242", "PENGUIN-31"] {
        assert!(
            !files_containing(&data, needle).is_empty(),
            "{needle} was never written"
        );
    }
    let response = daemon.request("DELETE", "/v1/customers/erase-me-7f3a", None);
    assert_eq!(response.status, 200, "{}", response.body);
    let code = daemon.terminate();
    assert_eq!(
        code,
        Some(0),
        "{}",
        std::fs::read_to_string(data.join("daemon.log")).unwrap_or_default()
    );
    for needle in ["erase-me-7f3a", "ada@example.org", "ZEBRA-424242", "PENGUIN-31"] {
        assert_eq!(
            files_containing(&data, needle),
            Vec::<String>::new(),
            "{needle} left after a clean stop"
        );
    }
    assert!(
        !files_containing(&data, "ZEBRA-777001").is_empty(),
        "another customer's data was lost"
    );

    // A kill -9 right after the erasure: the next start finishes it.
    let daemon = env.start(&[]);
    assert_eq!(daemon.get("/v1/customers/erase-me-7f3a").status, 404);
    assert_eq!(daemon.get("/v1/customers/keeper-1").status, 200);
    customer_with_a_send(&daemon, &env, "second-9c1d", "bob@example.org", 515_151);
    let response = daemon.request("DELETE", "/v1/customers/second-9c1d", None);
    assert_eq!(response.status, 200, "{}", response.body);
    daemon.kill();
    let daemon = env.start(&[]);
    for needle in ["second-9c1d", "bob@example.org", "ZEBRA-515151"] {
        assert_eq!(
            files_containing(&data, needle),
            Vec::<String>::new(),
            "{needle} left after a restart"
        );
    }
    assert_eq!(daemon.get("/v1/customers/keeper-1").status, 200);
    // Every line of the sink is whole and the sequence still increases.
    let lines = sink_lines(&env.sends());
    let seqs: Vec<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs.len(), lines.len());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(lines.iter().any(|l| l["kind"] == "erased"));
    // New sends keep flowing after the compaction.
    assert_eq!(daemon.post("/v1/track", &ping("keeper-1", "k2", 3)).status, 200);
    eventually("a new send", || {
        sink_lines(&env.sends())
            .iter()
            .any(|l| l["customer"] == "keeper-1" && l["seq"].as_u64() > seqs.last().copied())
            .then_some(())
    });
}

/// The ids merged into a customer are erased with it, asked by any of its
/// ids: their alias keys, their trace lines from before the merge, their
/// refused calls.
#[test]
fn erasing_a_customer_erases_the_ids_merged_into_it() {
    let env = Env::new(ERASE_WORKSPACE);
    let data = env.data();
    let daemon = env.start(&[]);
    let identify = r#"{"anonymousId":"ghost-anon-5d1","traits":{"email":"gina@example.org"}}"#;
    assert_eq!(daemon.post("/v1/identify", identify).status, 200);
    let ping_anonymous =
        |message_id: &str, n: i64| ping("ghost-anon-5d1", message_id, n).replace("\"userId\"", "\"anonymousId\"");
    assert_eq!(daemon.post("/v1/track", &ping_anonymous("g1", 616_161)).status, 200);
    let refused = r#"{"anonymousId":"ghost-anon-5d1","event":"ping","properties":{"n":"SQUID-41"}}"#;
    assert_eq!(daemon.post("/v1/track", refused).status, 422);
    let merge = r#"{"userId":"ghost-user-5d1","anonymousId":"ghost-anon-5d1","traits":{}}"#;
    assert_eq!(daemon.post("/v1/identify", merge).status, 200);
    assert_eq!(daemon.post("/v1/track", &ping_anonymous("g2", 626_262)).status, 200);
    customer_with_a_send(&daemon, &env, "keeper-2", "kim@example.org", 777_002);
    eventually("both sends", || {
        let lines = sink_lines(&env.sends());
        let sent = |who: &str| lines.iter().any(|l| l["customer"] == who && l["kind"] == "send");
        (sent("ghost-anon-5d1") && sent("ghost-user-5d1")).then_some(())
    });
    let needles = [
        "ghost-anon-5d1",
        "ghost-user-5d1",
        "gina@example.org",
        "ZEBRA-616161",
        "ZEBRA-626262",
        "SQUID-41",
    ];
    for needle in needles {
        assert!(
            !files_containing(&data, needle).is_empty(),
            "{needle} was never written"
        );
    }
    // Asked by the anonymous id: the customer it names is erased.
    let response = daemon.request("DELETE", "/v1/customers/ghost-anon-5d1", None);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["rejected_erased"], 1, "{}", response.body);
    assert_eq!(daemon.terminate(), Some(0));
    for needle in needles {
        assert_eq!(
            files_containing(&data, needle),
            Vec::<String>::new(),
            "{needle} left after a clean stop"
        );
    }
    assert!(
        !files_containing(&data, "ZEBRA-777002").is_empty(),
        "another customer's data was lost"
    );
}

/// The metric of online compactions, read from `/metrics`.
fn online_compactions(daemon: &Daemon) -> u64 {
    let text = daemon.get("/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix("journeyc_erasure_compactions_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("journeyc_erasure_compactions_total in /metrics")
}

crate::on_both_stores!(erasure_within_a_bound_while_the_daemon_runs);

/// With `--erasure-within`, the bytes of an erased customer leave the data
/// directory while the daemon keeps running, and intake that goes on across
/// the compaction loses nothing and sends nothing twice.
/// On PostgreSQL the table's files (`base/`) are searched too: `VACUUM FULL`
/// must leave none of the erased rows there (the write-ahead log is the
/// database's to recycle, `docs/scale-out.md`).
fn erasure_within_a_bound_while_the_daemon_runs(backend: Backend) {
    let env = Env::on(ERASE_WORKSPACE, backend);
    let data = env.data();
    let tables = env.postgres.as_ref().map(|pg| pg.data_dir().join("base"));
    let left = |needle: &str| {
        let mut found = files_containing(&data, needle);
        if let Some(tables) = &tables {
            found.extend(files_containing(tables, needle));
        }
        found
    };
    let daemon = env.start(&["--erasure-within", "2s"]);
    customer_with_a_send(&daemon, &env, "online-erase-4b2e", "olga@example.org", 434_343);
    customer_with_a_send(&daemon, &env, "keeper-3", "kim@example.org", 777_003);
    let refused = r#"{"userId":"online-erase-4b2e","event":"ping","properties":{"n":"WALRUS-51"}}"#;
    assert_eq!(daemon.post("/v1/track", refused).status, 422);
    let needles = ["online-erase-4b2e", "olga@example.org", "ZEBRA-434343", "WALRUS-51"];
    // Written first: on PostgreSQL somewhere in its files (the log at least).
    let server = env.postgres.as_ref().map(|pg| pg.data_dir());
    for needle in needles {
        let mut found = files_containing(&data, needle);
        if let Some(server) = &server {
            found.extend(files_containing(server, needle));
        }
        assert!(!found.is_empty(), "{needle} was never written");
    }
    assert_eq!(online_compactions(&daemon), 0);
    let response = daemon.request("DELETE", "/v1/customers/online-erase-4b2e", None);
    assert_eq!(response.status, 200, "{}", response.body);

    // Intake goes on while the compaction is waited for, runs and is over:
    // events are posted until 20 after the compaction was counted.
    let mut acked = Vec::new();
    let mut after = None;
    let started = std::time::Instant::now();
    for i in 0.. {
        assert!(started.elapsed() < DEADLINE, "no online compaction while posting");
        let n = 900_000 + i;
        let response = daemon.post("/v1/track", &ping("keeper-3", &format!("k3-{i}"), n));
        assert_eq!(response.status, 200, "{}", response.body);
        acked.push(n);
        if after.is_none() && i % 5 == 0 && online_compactions(&daemon) > 0 {
            after = Some(i);
        }
        if after.is_some_and(|at| i >= at + 20) {
            break;
        }
    }
    assert!(after.is_some_and(|at| at > 0), "the compaction came before any posting");
    // The erased customer's bytes are gone, the daemon still running.
    for needle in needles {
        assert_eq!(
            left(needle),
            Vec::<String>::new(),
            "{needle} left while the daemon runs"
        );
    }
    assert!(daemon.child.id() > 0);
    assert_eq!(daemon.get("/v1/customers/online-erase-4b2e").status, 404);
    assert_eq!(daemon.get("/v1/customers/keeper-3").status, 200);
    // Every acknowledged event is sent once, before and after the swap.
    let last = *acked.last().expect("acked");
    eventually("the sends of every acknowledged event", || {
        let text = std::fs::read_to_string(env.sends()).unwrap_or_default();
        text.contains(&format!("ZEBRA-{last}")).then_some(())
    });
    let text = std::fs::read_to_string(env.sends()).expect("sends");
    for n in &acked {
        let needle = format!("ZEBRA-{n}");
        let times = text.lines().filter(|l| l.contains(&needle)).count();
        assert_eq!(times, 1, "{needle} sent {times} times");
    }
    let lines = sink_lines(&env.sends());
    let seqs: Vec<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs.len(), lines.len());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // A second erasure in the same run gets its own compaction.
    customer_with_a_send(&daemon, &env, "online-erase-2nd", "otto@example.org", 454_545);
    let response = daemon.request("DELETE", "/v1/customers/online-erase-2nd", None);
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("the second compaction", || {
        (online_compactions(&daemon) == 2).then_some(())
    });
    for needle in ["online-erase-2nd", "otto@example.org", "ZEBRA-454545"] {
        assert_eq!(
            left(needle),
            Vec::<String>::new(),
            "{needle} left while the daemon runs"
        );
    }
    assert_eq!(
        daemon.post("/v1/track", &ping("keeper-3", "k3-end", 999_999)).status,
        200
    );
    eventually("a send after the second compaction", || {
        let text = std::fs::read_to_string(env.sends()).unwrap_or_default();
        text.contains("ZEBRA-999999").then_some(())
    });
    assert_eq!(daemon.terminate(), Some(0));
}

/// A `--spread` daemon on `env`'s database with `data` as its data
/// directory.
fn start_spread(env: &Env, data: &Path, extra: &[&str]) -> Daemon {
    env.start_spread_with_env(data, extra, &[])
}

/// An id starting with `prefix` whose customer falls in partitions 128..256
/// (of 256): the half a second `--spread` node takes from the first.
fn id_in_upper_half(prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|id| journeyc::daemon::kv::pg::partition_of(&journeyc::daemon::store::customer_key(id), 256) >= 128)
        .expect("an id")
}

/// The files of either of two data directories holding `needle`.
fn files_in_either(a: &Path, b: &Path, needle: &str) -> Vec<String> {
    let mut found = files_containing(a, needle);
    found.extend(files_containing(b, needle));
    found
}

/// How many partitions each live node holds, by the lease table.
fn spread_shares(pg: &super::pg::Postgres) -> Vec<usize> {
    pg.psql(
        "SELECT count(*) FROM journeyc_leases WHERE partition >= 0 AND expires_at >= now() \
         GROUP BY owner ORDER BY owner",
    )
    .lines()
    .filter_map(|line| line.trim().parse().ok())
    .collect()
}

/// An identify with an email and a ping, posted to `daemon`; waits until
/// the send is in the JSONL sink of `delivered_by` (a data directory).
fn spread_customer_with_a_send(daemon: &Daemon, delivered_by: &Path, id: &str, email: &str, n: i64) {
    let identify = format!(r#"{{"userId":"{id}","traits":{{"email":"{email}"}}}}"#);
    assert_eq!(daemon.post("/v1/identify", &identify).status, 200);
    assert_eq!(daemon.post("/v1/track", &ping(id, &format!("{id}-m"), n)).status, 200);
    eventually("the send in the delivering node's sink", || {
        sink_lines(&delivered_by.join("sends.jsonl"))
            .iter()
            .any(|l| l["customer"] == id && l["kind"] == "send")
            .then_some(())
    });
}

/// The erasure marks and the redaction records left in the database.
fn marks_and_redactions(pg: &super::pg::Postgres) -> (String, String) {
    (
        pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 120")
            .trim()
            .to_string(),
        pg.psql("SELECT count(*) FROM journeyc_redacted").trim().to_string(),
    )
}

/// Two `--spread` nodes on one database, each with its own data directory
/// and JSONL sink: the sends each delivered of a customer erased at either
/// node are redacted in its own files at its stop, also those of a
/// partition it held when it delivered them and no longer holds.
#[test]
fn sends_every_spread_node_delivered_are_redacted_at_its_stop() {
    if super::pg::skip_requested() {
        return;
    }
    let env = Env::on(ERASE_WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let (a_data, b_data) = (env.root.path().join("data"), env.root.path().join("second"));
    let early = id_in_upper_half("early-9e2");
    let (gone_a, gone_b, keeper) = (
        id_in_upper_half("gone-at-a-"),
        id_in_upper_half("gone-at-b-"),
        id_in_upper_half("keeper-"),
    );
    // Alone, A holds every partition and delivers the early customer's send.
    let a = start_spread(&env, &a_data, &[]);
    a.wait_until_owner();
    spread_customer_with_a_send(&a, &a_data, &early, "eve@example.org", 808_081);
    // B takes the upper half and delivers the sends of its customers.
    let b = start_spread(&env, &b_data, &[]);
    eventually("two halves", || (spread_shares(pg) == vec![128, 128]).then_some(()));
    spread_customer_with_a_send(&a, &b_data, &gone_a, "alma@example.org", 808_082);
    spread_customer_with_a_send(&b, &b_data, &gone_b, "bert@example.org", 808_083);
    spread_customer_with_a_send(&b, &b_data, &keeper, "kim@example.org", 808_084);
    let needles = [
        early.as_str(),
        "eve@example.org",
        "ZEBRA-808081",
        gone_a.as_str(),
        "alma@example.org",
        "ZEBRA-808082",
        gone_b.as_str(),
        "bert@example.org",
        "ZEBRA-808083",
    ];
    let left = |needle: &str| files_in_either(&a_data, &b_data, needle);
    for needle in needles {
        assert!(!left(needle).is_empty(), "{needle} was never written");
    }
    // Erased at A: the early customer (its send is in A's file, its
    // partition B's now) and one of B's; at B: another of B's.
    for (node, id) in [(&a, &early), (&a, &gone_a), (&b, &gone_b)] {
        let response = node.request("DELETE", &format!("/v1/customers/{id}"), None);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    assert_eq!(b.terminate(), Some(0));
    assert_eq!(a.terminate(), Some(0));
    for needle in needles {
        assert_eq!(left(needle), Vec::<String>::new(), "{needle} left after both stopped");
    }
    assert!(
        !files_containing(&b_data, "ZEBRA-808084").is_empty(),
        "another customer's send was lost"
    );
    // Both have redacted: the next node to hold the partitions drops the
    // marks, and their redaction records with them.
    let a = start_spread(&env, &a_data, &[]);
    a.wait_until_owner();
    assert_eq!(a.get(&format!("/v1/customers/{keeper}")).status, 200);
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(marks_and_redactions(pg), ("0".to_string(), "0".to_string()));
}

/// With `--erasure-within`, every running `--spread` node redacts its own
/// JSONL sink within the bound, and one killed -9 before it did redacts at
/// its next start; a mark stays until every node that delivers has redacted.
#[test]
fn sends_every_spread_node_delivered_are_redacted_while_they_run_and_after_a_kill() {
    if super::pg::skip_requested() {
        return;
    }
    let env = Env::on(ERASE_WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let (a_data, b_data) = (env.root.path().join("data"), env.root.path().join("second"));
    let within = ["--erasure-within", "2s"];
    let early = id_in_upper_half("early-online-");
    let (gone, keeper) = (id_in_upper_half("gone-online-"), id_in_upper_half("keeper-online-"));
    let a = start_spread(&env, &a_data, &within);
    a.wait_until_owner();
    spread_customer_with_a_send(&a, &a_data, &early, "olive@example.org", 909_091);
    let b = start_spread(&env, &b_data, &within);
    eventually("two halves", || (spread_shares(pg) == vec![128, 128]).then_some(()));
    spread_customer_with_a_send(&a, &b_data, &gone, "gus@example.org", 909_092);
    spread_customer_with_a_send(&b, &b_data, &keeper, "kim@example.org", 909_093);
    let needles = [
        early.as_str(),
        "olive@example.org",
        "ZEBRA-909091",
        gone.as_str(),
        "gus@example.org",
        "ZEBRA-909092",
    ];
    let left = |needle: &str| files_in_either(&a_data, &b_data, needle);
    for needle in needles {
        assert!(!left(needle).is_empty(), "{needle} was never written");
    }
    for id in [&early, &gone] {
        let response = b.request("DELETE", &format!("/v1/customers/{id}"), None);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    // Both nodes keep running: each one's file is redacted.
    eventually("every node's sink redacted while it runs", || {
        needles.iter().all(|needle| left(needle).is_empty()).then_some(())
    });
    assert_eq!(a.get(&format!("/v1/customers/{keeper}")).status, 200);
    eventually("the marks dropped once both redacted", || {
        (marks_and_redactions(pg) == ("0".to_string(), "0".to_string())).then_some(())
    });

    // B is killed -9 with a customer's send in its file; the customer is
    // erased at A once A holds every partition. A redacts its own file but
    // keeps the mark, since B has not redacted; B's next start does.
    let second = id_in_upper_half("gone-killed-");
    spread_customer_with_a_send(&b, &b_data, &second, "kurt@example.org", 909_094);
    b.kill();
    eventually("A holds every partition", || {
        (spread_shares(pg) == vec![256]).then_some(())
    });
    let response = a.request("DELETE", &format!("/v1/customers/{second}"), None);
    assert_eq!(response.status, 200, "{}", response.body);
    let killed = [second.as_str(), "kurt@example.org", "ZEBRA-909094"];
    eventually("A's redaction recorded", || {
        (marks_and_redactions(pg).1 == "1").then_some(())
    });
    assert_eq!(
        marks_and_redactions(pg).0,
        "1",
        "the mark was dropped before B redacted"
    );
    for needle in killed {
        assert!(
            !files_containing(&b_data, needle).is_empty(),
            "{needle} is not in B's file"
        );
    }
    // As a kill -9 inside a pass would leave it (before the rename): a
    // half-written temporary file beside the sink, which the next pass
    // replaces.
    let temporary = b_data.join("sends.jsonl.redacting");
    std::fs::write(&temporary, br#"{"customer":"half-writ"#).expect("write");
    let b = start_spread(&env, &b_data, &within);
    assert!(!temporary.exists(), "the temporary file was left");
    for needle in killed {
        assert_eq!(
            files_containing(&b_data, needle),
            Vec::<String>::new(),
            "{needle} left after B's restart"
        );
    }
    eventually("the mark dropped once B redacted", || {
        (marks_and_redactions(pg) == ("0".to_string(), "0".to_string())).then_some(())
    });
    let lines = sink_lines(&b_data.join("sends.jsonl"));
    assert!(
        lines.iter().all(|l| l["seq"].as_u64().is_some()),
        "a line without its seq"
    );
    assert_eq!(b.terminate(), Some(0));
    assert_eq!(a.terminate(), Some(0));
}

/// The store flags of `env` with `--erasure-within 2s`, for a node without
/// `--spread`.
fn bounded_args(env: &Env) -> Vec<String> {
    let mut args = env.store_args();
    args.extend(["--erasure-within".to_string(), "2s".to_string()]);
    args
}

/// Without `--spread`: the sends an owner delivered stay in its data
/// directory after it was killed and a standby took over; a customer erased
/// at the new owner keeps its mark until the old owner, back as a standby,
/// has redacted its own file (at its start, before it listens).
#[test]
fn sends_a_killed_owner_delivered_are_redacted_when_it_comes_back_as_a_standby() {
    if super::pg::skip_requested() {
        return;
    }
    let env = Env::on(ERASE_WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let (a_data, b_data) = (env.root.path().join("data"), env.root.path().join("second"));
    let start = |data: &Path| {
        let args = bounded_args(&env);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::start(&env.workspace(), data, &args)
    };
    let a = start(&a_data);
    a.wait_until_owner();
    spread_customer_with_a_send(&a, &a_data, "failover-gone-3c", "fay@example.org", 717_171);
    let b = start(&b_data);
    a.kill();
    b.wait_until_owner();
    let response = b.request("DELETE", "/v1/customers/failover-gone-3c", None);
    assert_eq!(response.status, 200, "{}", response.body);
    let needles = ["failover-gone-3c", "fay@example.org", "ZEBRA-717171"];
    // B redacts its own file (it holds nothing of the customer) and records
    // it; the mark waits for A.
    eventually("B's redaction recorded", || {
        (marks_and_redactions(pg).1 == "1").then_some(())
    });
    assert_eq!(
        marks_and_redactions(pg).0,
        "1",
        "the mark was dropped before A redacted"
    );
    for needle in needles {
        assert!(
            !files_containing(&a_data, needle).is_empty(),
            "{needle} is not in A's file"
        );
    }
    let a = start(&a_data);
    assert_eq!(a.role().as_deref(), Some("standby"));
    for needle in needles {
        assert_eq!(
            files_containing(&a_data, needle),
            Vec::<String>::new(),
            "{needle} left after A's restart"
        );
        assert_eq!(
            files_containing(&b_data, needle),
            Vec::<String>::new(),
            "{needle} in B's data directory"
        );
    }
    eventually("the mark dropped once A redacted", || {
        (marks_and_redactions(pg) == ("0".to_string(), "0".to_string())).then_some(())
    });
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}

/// A data directory that will not start again (its machine gone) is
/// retired with `DELETE /v1/redactors/ID` at any node: the mark that
/// waited for it alone is dropped, and a daemon started again on it is
/// refused, since its files still hold the erased customer's send.
#[test]
fn a_retired_redactor_holds_no_mark_and_its_data_directory_is_refused() {
    if super::pg::skip_requested() {
        return;
    }
    let env = Env::on(ERASE_WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let (a_data, b_data) = (env.root.path().join("data"), env.root.path().join("second"));
    let args = bounded_args(&env);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = |data: &Path| Daemon::start(&env.workspace(), data, &args);
    let a = start(&a_data);
    a.wait_until_owner();
    spread_customer_with_a_send(&a, &a_data, "retired-gone-5d", "ria@example.org", 616_161);
    let b = start(&b_data);
    a.kill();
    b.wait_until_owner();
    let c = start(&env.root.path().join("third"));
    assert_eq!(c.role().as_deref(), Some("standby"));
    let response = b.request("DELETE", "/v1/customers/retired-gone-5d", None);
    assert_eq!(response.status, 200, "{}", response.body);
    // C, a standby that never delivered, is no redactor.
    eventually("B's redaction recorded", || {
        (marks_and_redactions(pg).1 == "1").then_some(())
    });
    let a_id = std::fs::read_to_string(a_data.join("redactor")).expect("A's redactor id");
    let listed = c.get("/v1/redactors");
    assert_eq!(listed.status, 200, "{}", listed.body);
    let redactors = listed.json()["redactors"].as_array().cloned().expect("a list");
    assert_eq!(redactors.len(), 2, "{}", listed.body);
    assert_eq!(redactors[0]["redactor"], a_id.as_str(), "{}", listed.body);
    assert_eq!(redactors[0]["marks_unredacted"], 1, "{}", listed.body);
    assert_eq!(redactors[1]["marks_unredacted"], 0, "{}", listed.body);
    assert_eq!(redactors[0]["retired_at"], serde_json::Value::Null, "{}", listed.body);
    assert_eq!(
        marks_and_redactions(pg).0,
        "1",
        "the mark was dropped before A redacted"
    );

    let unknown = b.request("DELETE", "/v1/redactors/redactor-none", None);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    // Retired at the standby: the owner drops the mark at its next look.
    let retired = c.request("DELETE", &format!("/v1/redactors/{a_id}"), None);
    assert_eq!(retired.status, 200, "{}", retired.body);
    assert!(retired.json()["retired_at"].is_string(), "{}", retired.body);
    let again = b.request("DELETE", &format!("/v1/redactors/{a_id}"), None);
    assert_eq!(again.status, 409, "{}", again.body);
    eventually("the mark dropped once A was retired", || {
        (marks_and_redactions(pg) == ("0".to_string(), "0".to_string())).then_some(())
    });
    assert!(b.get("/v1/redactors").json()["redactors"][0]["retired_at"].is_string());

    // A's files were never redacted: starting on them is refused.
    assert!(!files_containing(&a_data, "ria@example.org").is_empty());
    let (code, stderr) = serve_refused(&env, &args);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("was retired"), "{stderr}");
    assert_eq!(c.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}

/// On sled the one daemon redacts its own files: there are no redactors
/// to list or retire, and both paths say so in a JSON 404.
#[test]
fn sled_has_no_redactors() {
    let env = Env::new(ERASE_WORKSPACE);
    let daemon = env.start(&[]);
    for (method, path) in [("GET", "/v1/redactors"), ("DELETE", "/v1/redactors/redactor-1")] {
        let answer = daemon.request(method, path, None);
        assert_eq!(answer.status, 404, "{}", answer.body);
        let reason = answer.json()["error"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(reason.contains("PostgreSQL only"), "{}", answer.body);
    }
    assert_eq!(daemon.terminate(), Some(0));
}
