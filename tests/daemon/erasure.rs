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
    assert_eq!(daemon.terminate(), Some(0));
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
