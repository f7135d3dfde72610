//! Several daemons on one PostgreSQL database: the store's lease, its epoch
//! fencing and failover, on a real server (`pg.rs`) with real child
//! processes paused (SIGSTOP) and killed (SIGKILL).

use super::harness::*;
use journeyc::daemon::kv::pg::{partition_of, LeaseState, Pg};
use journeyc::daemon::kv::Batch;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn skip() -> bool {
    let skip = super::pg::skip_requested();
    if skip {
        eprintln!("JOURNEYC_SKIP_PG=1: PostgreSQL test skipped");
    }
    skip
}

fn bought(customer: &str) -> String {
    format!(
        r#"{{"type":"track","userId":"{customer}","event":"bought","properties":{{"amount":1}},"messageId":"m-{customer}"}}"#
    )
}

/// Another node on `env`'s database, with a data directory (sink file,
/// `addr`) of its own; it comes up as a standby while another one owns.
fn node(env: &Env, name: &str) -> (Daemon, PathBuf) {
    let data = env.root.path().join(name);
    (start_on(env, &data), data)
}

/// A daemon on `env`'s database with `data` as its data directory.
fn start_on(env: &Env, data: &Path) -> Daemon {
    let args = env.store_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&env.workspace(), data, &args)
}

/// Waits for the daemon to exit on its own; its exit code.
fn exit_code(daemon: &mut Daemon) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = daemon.child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(started.elapsed() < DEADLINE, "the daemon kept running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sends in `data`'s JSONL sink.
fn sends(data: &Path) -> Vec<serde_json::Value> {
    sink_lines(&data.join("sends.jsonl"))
        .into_iter()
        .filter(|l| l["kind"] == "send")
        .collect()
}

/// Across every node's sink: each (customer, message) went out under one
/// send id and one outbox sequence number (a record delivered again by the
/// next owner repeats both; a state change applied twice would not), and
/// no node's own file holds an id twice. Answers the (customer, message)
/// pairs sent.
fn one_id_per_message(nodes: &[&Path]) -> BTreeSet<(String, String)> {
    let mut ids: BTreeMap<(String, String), BTreeSet<(String, u64)>> = BTreeMap::new();
    let mut owners: BTreeMap<String, (String, String)> = BTreeMap::new();
    for data in nodes {
        let mut own = BTreeSet::new();
        for line in sends(data) {
            let id = line["id"].as_str().expect("send id").to_string();
            let seq = line["seq"].as_u64().expect("seq");
            assert!(own.insert(id.clone()), "{}: send id {id} twice", data.display());
            let key = (
                line["customer"].as_str().expect("customer").to_string(),
                line["message"].as_str().expect("message").to_string(),
            );
            let previous = owners.insert(id.clone(), key.clone());
            assert!(previous.is_none_or(|p| p == key), "send id {id} names two messages");
            ids.entry(key).or_default().insert((id, seq));
        }
    }
    for (key, sent) in &ids {
        assert_eq!(sent.len(), 1, "{key:?} went out as {sent:?}");
    }
    ids.into_keys().collect()
}

/// Waits until every acknowledged customer's `hello` and timer `later`
/// sends are in some node's sink, then stops `nodes`, then checks
/// [`one_id_per_message`] and that each of those sends is there.
fn every_send_once(data: &[PathBuf], acknowledged: &BTreeSet<String>, nodes: Vec<Daemon>) {
    let expected = || {
        acknowledged
            .iter()
            .flat_map(|c| [(c.clone(), "hello".to_string()), (c.clone(), "later".to_string())])
    };
    let missing = || {
        let mut sent = BTreeSet::new();
        for data in data {
            for line in sends(data) {
                if let (Some(customer), Some(message)) = (line["customer"].as_str(), line["message"].as_str()) {
                    sent.insert((customer.to_string(), message.to_string()));
                }
            }
        }
        expected().filter(|send| !sent.contains(send)).collect::<Vec<_>>()
    };
    let started = Instant::now();
    while !missing().is_empty() {
        if started.elapsed() > DEADLINE {
            // What is missing, by partition, and what the nodes logged.
            let by_partition: Vec<String> = (missing().iter())
                .map(|(customer, message)| {
                    let partition = partition_of(&journeyc::daemon::store::customer_key(customer), 256);
                    format!("{customer}/{message} (partition {partition})")
                })
                .collect();
            let logs: Vec<String> = (data.iter())
                .map(|data| {
                    let log = std::fs::read_to_string(data.join("daemon.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!("== {}:\n{}", data.display(), tail.join("\n"))
                })
                .collect();
            panic!(
                "timed out waiting for {} of {} acknowledged sends: {}\n{}",
                by_partition.len(),
                2 * acknowledged.len(),
                by_partition.join(", "),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    for node in nodes {
        assert_eq!(node.terminate(), Some(0), "graceful stop exits 0");
    }
    let data: Vec<&Path> = data.iter().map(PathBuf::as_path).collect();
    let sent = one_id_per_message(&data);
    for send in expected() {
        assert!(sent.contains(&send), "{send:?}");
    }
}

/// Two clients posting batches of 10 `bought` calls (customers: the
/// prefix, client, batch and event) to the nodes of `addrs` in turn, moving on at
/// a refusal or a cut connection (a killed node), and, with `rotate`,
/// after every acknowledged batch too.
struct Posters {
    acknowledged: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Posters {
    fn start(addrs: &Arc<Mutex<Vec<String>>>, prefix: &str, rotate: bool) -> Posters {
        let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|poster| {
                let (addrs, acknowledged, stop) = (addrs.clone(), acknowledged.clone(), stop.clone());
                let prefix = format!("{prefix}{poster}");
                std::thread::spawn(move || {
                    let (mut batch_number, mut at) = (0, if rotate { poster } else { 0 });
                    while !stop.load(Ordering::Relaxed) && batch_number < 5000 {
                        let customers: Vec<String> = (0..10).map(|i| format!("{prefix}b{batch_number}e{i}")).collect();
                        let events: Vec<String> = customers.iter().map(|c| bought(c)).collect();
                        let body = format!("{{\"batch\":[{}]}}", events.join(","));
                        let addr = {
                            let addrs = addrs.lock().expect("lock");
                            addrs[at % addrs.len()].clone()
                        };
                        let auth = format!("Bearer {TOKEN}");
                        match request(&addr, "POST", "/v1/batch", Some(&body), Some(&auth)) {
                            Ok(response) if response.status == 200 => {
                                acknowledged.lock().expect("lock").extend(customers);
                                batch_number += 1;
                                if rotate {
                                    at += 1;
                                }
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            _ => {
                                at += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                })
            })
            .collect();
        Posters {
            acknowledged,
            stop,
            threads,
        }
    }

    /// The customers acknowledged so far.
    fn count(&self) -> usize {
        self.acknowledged.lock().expect("lock").len()
    }

    /// Waits until more than `n` are acknowledged; past the deadline,
    /// prints the logs of the nodes under `root` and fails.
    fn acked_more_than(&self, n: usize, root: &Path) {
        let started = Instant::now();
        while self.count() <= n {
            if started.elapsed() > DEADLINE {
                for name in ["data", "second", "third"] {
                    eprintln!(
                        "== {name}\n{}",
                        std::fs::read_to_string(root.join(name).join("daemon.log")).unwrap_or_default()
                    );
                }
                panic!(
                    "timed out waiting for more than {n} acknowledged calls ({})",
                    self.count()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the clients; the customers acknowledged.
    fn finish(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("poster");
        }
        let acknowledged = self.acknowledged.lock().expect("lock").clone();
        acknowledged
    }
}

#[test]
fn a_write_after_a_takeover_is_refused_inside_its_transaction() {
    if skip() {
        return;
    }
    let server = super::pg::Postgres::start("journeyc");
    let owner = Pg::open(&server.url(), Duration::from_secs(10)).expect("open");
    assert_eq!(owner.lease(), LeaseState::Held(1));
    let standby = Pg::open(&server.url(), Duration::from_secs(10)).expect("open a second node");
    assert_eq!(standby.lease(), LeaseState::Standby);
    let write = |key: &str| {
        let mut batch = Batch::default();
        batch.insert(key.as_bytes(), &b"1"[..]);
        batch
    };
    let refused = standby
        .apply(None, write("mstandby"))
        .expect_err("a standby writes nothing");
    assert!(refused.to_string().contains("standby"), "{refused}");
    owner.apply(None, write("mbefore")).expect("the owner writes");

    // Another node takes the lease over, as a standby does after expiry.
    server.psql("UPDATE journeyc_leases SET owner = 'journeyc-other', epoch = epoch + 1");
    let refused = owner
        .apply(None, write("mafter"))
        .expect_err("no write after a takeover");
    assert!(
        refused
            .to_string()
            .contains("lease lost: partition -1 (the whole store) now owned by journeyc-other at epoch 2; this node"),
        "{refused}"
    );
    assert!(matches!(owner.lease(), LeaseState::Lost(_)), "{:?}", owner.lease());
    // The compare-and-write is fenced too, and nothing came through.
    let refused = owner
        .apply(Some((b"mbefore", b"1")), write("mswap"))
        .expect_err("no compare-and-write after a takeover");
    assert!(refused.to_string().contains("lease lost"), "{refused}");
    assert_eq!(
        server
            .psql("SELECT string_agg(convert_from(key, 'UTF8'), ',' ORDER BY key) FROM journeyc_kv")
            .trim(),
        "mbefore"
    );
}

/// A group commit's outbox records over many partitions, as the commit
/// thread writes them (one chunk per partition, numbered in group order,
/// so the chunks' numbers interleave), read by a sink in rounds of
/// `limit`: every round but the last is full, and the records come in
/// number order, each once.
#[test]
fn a_sink_reads_full_rounds_of_a_group_whose_partitions_interleave() {
    if skip() {
        return;
    }
    let server = super::pg::Postgres::start("journeyc");
    let pg = Pg::open(&server.url(), Duration::from_secs(10)).expect("open");
    let store = journeyc::daemon::store::Store::on(journeyc::daemon::kv::Kv::Postgres(pg)).expect("store");
    let journeyc::daemon::kv::Kv::Postgres(pg) = &store.db else {
        unreachable!("opened on PostgreSQL")
    };
    let (records, partitions, limit): (usize, usize, usize) = (2_010, 64, 100);
    let mut chunks: BTreeMap<i32, Vec<(u64, String)>> = BTreeMap::new();
    let mut written: Vec<u64> = Vec::new();
    for i in 0..records {
        let partition = (i % partitions) as i32;
        let seq = pg.outbox_seq(partition).expect("a number");
        written.push(seq);
        chunks
            .entry(partition)
            .or_default()
            .push((seq, format!(r#"{{"n":{i}}}"#)));
    }
    let mut batch = Batch::default();
    for chunk in chunks.values() {
        let chunk: Vec<(u64, &str)> = chunk.iter().map(|(seq, line)| (*seq, line.as_str())).collect();
        batch.insert(
            journeyc::daemon::store::outbox_key(chunk[0].0),
            journeyc::daemon::store::encode_seq_chunk(&chunk),
        );
    }
    store.db.apply_batch(batch).expect("commit the group");

    let mut cursors = journeyc::daemon::store::Cursors::default();
    let (mut read, mut rounds) = (Vec::new(), 0);
    loop {
        let round = store.outbox_after(&cursors, 0, limit).expect("a round");
        rounds += 1;
        assert!(
            rounds <= records.div_ceil(limit),
            "{rounds} rounds for {records} records"
        );
        if round.more {
            assert_eq!(round.items.len(), limit, "round {rounds} cut short");
        }
        read.extend(round.items.iter().map(|item| item.seq));
        cursors = round.next;
        if !round.more {
            break;
        }
    }
    assert_eq!(rounds, records.div_ceil(limit));
    assert_eq!(read, written, "every record once, in number order");
}

/// Another node ("journeyc-other") takes `partition` over, by updating its
/// lease row in another session, for an hour.
fn take_over(pg: &super::pg::Postgres, partition: i32) {
    pg.psql(&format!(
        "UPDATE journeyc_leases SET owner = 'journeyc-other', epoch = epoch + 1, \
         expires_at = now() + interval '1 hour' WHERE partition = {partition}"
    ));
}

/// Two customer ids in different partitions of 256.
fn two_partitions() -> ((String, i32), (String, i32)) {
    let p = |id: &str| partition_of(format!("c{id}").as_bytes(), 256);
    let first = "taken".to_string();
    let other = (0..)
        .map(|i| format!("other{i}"))
        .find(|id| p(id) != p(&first))
        .expect("another partition");
    let (pf, po) = (p(&first), p(&other));
    ((first, pf), (other, po))
}

#[test]
fn a_batch_touching_a_partition_taken_over_is_refused_and_the_other_partitions_commit() {
    if skip() {
        return;
    }
    let server = super::pg::Postgres::start("journeyc");
    let owner = Pg::open(&server.url(), Duration::from_secs(2)).expect("open");
    // The one node holds the store's lease and all 256 partition leases.
    assert_eq!(owner.lease(), LeaseState::Held(1));
    let owned = owner.owned();
    assert_eq!(owned.keys().copied().collect::<Vec<_>>(), (0..256).collect::<Vec<_>>());
    assert!(owned.values().all(|epoch| *epoch == 1), "{owned:?}");
    assert_eq!(
        server
            .psql(
                "SELECT count(*) || ' ' || count(DISTINCT owner) || ' ' || min(partition) || ' ' || max(partition) \
                 FROM journeyc_leases"
            )
            .trim(),
        "257 1 -1 255"
    );
    let ((taken, p), (other, q)) = two_partitions();
    let customer = |id: &str| format!("c{id}");
    let write = |keys: &[&str]| {
        let mut batch = Batch::default();
        for key in keys {
            batch.insert(key.as_bytes(), &b"1"[..]);
        }
        batch
    };

    // Another node takes partition p over (its row updated by another session).
    take_over(&server, p);
    let refused = owner
        .apply(None, write(&[&customer(&taken), &customer(&other), "mcount"]))
        .expect_err("no write to a partition taken over");
    assert!(
        refused.to_string().contains(&format!(
            "lease lost: partition {p} now owned by journeyc-other at epoch 2; this node ({}) held epoch 1",
            owner.node()
        )),
        "{refused}"
    );
    let keys = || {
        server
            .psql("SELECT coalesce(string_agg(convert_from(key, 'UTF8'), ',' ORDER BY key), '') FROM journeyc_kv")
            .trim()
            .to_string()
    };
    assert_eq!(keys(), "", "nothing of the refused batch landed");
    assert!(!owner.owned().contains_key(&p));
    assert_eq!(owner.owned().len(), 255);
    // The node goes on: the store's lease and the other partitions commit.
    assert_eq!(owner.lease(), LeaseState::Held(1));
    owner
        .apply(None, write(&[&customer(&other), "mcount"]))
        .expect("a batch of the other partitions commits");
    assert_eq!(keys(), format!("c{other},mcount"));
    // p stays refused across renewals (a tick is a third of the 2 s lease),
    // the compare-and-write too.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!owner.owned().contains_key(&p), "{:?}", owner.owned());
    let refused = owner
        .apply(None, write(&[&customer(&taken)]))
        .expect_err("still not owned");
    assert!(
        refused
            .to_string()
            .contains(&format!("partition {p} is not owned by this node")),
        "{refused}"
    );
    let refused = owner
        .apply(Some((customer(&taken).as_bytes(), b"1")), write(&[&customer(&other)]))
        .expect_err("a compare-and-write naming p");
    assert!(refused.to_string().contains(&format!("partition {p}")), "{refused}");
    assert_eq!(
        server
            .psql(&format!(
                "SELECT owner || ' ' || epoch FROM journeyc_leases WHERE partition = {q}"
            ))
            .trim(),
        format!("{} 1", owner.node())
    );

    // The other node's lease on p expires: the node claims p at the next epoch.
    expire_lease(&server, p);
    eventually("p claimed again", || (owner.owned().get(&p) == Some(&3)).then_some(()));
    owner.apply(None, write(&[&customer(&taken)])).expect("p commits again");
    assert_eq!(keys(), format!("c{other},c{taken},mcount"));
    assert_eq!(
        server
            .psql(&format!(
                "SELECT owner || ' ' || epoch FROM journeyc_leases WHERE partition = {p}"
            ))
            .trim(),
        format!("{} 3", owner.node())
    );
    // A stop releases every row of the node.
    owner.release().expect("release");
    assert_eq!(
        server
            .psql("SELECT count(*) FROM journeyc_leases WHERE expires_at >= now()")
            .trim(),
        "0"
    );
}

#[test]
fn a_daemon_refuses_calls_of_a_partition_taken_over_and_serves_the_others() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let daemon = env.start(&[]);
    let ((taken, p), (other, _)) = two_partitions();
    take_over(pg, p);
    let refused = daemon.post("/v1/track", &ping(&taken, "m1", 1));
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert!(
        refused
            .body
            .contains(&format!("lease lost: partition {p} now owned by journeyc-other")),
        "{}",
        refused.body
    );
    assert_eq!(daemon.get(&format!("/v1/customers/{taken}")).status, 404);
    // The other partitions' customers are served meanwhile, and stay served.
    for n in 0..3 {
        let accepted = daemon.post("/v1/track", &ping(&other, &format!("m{n}"), n));
        assert_eq!(accepted.status, 200, "{}", accepted.body);
        let refused = daemon.post("/v1/track", &ping(&taken, &format!("m{n}"), n));
        assert_eq!(refused.status, 500, "{}", refused.body);
    }
    // Concurrent requests share group commits: a group with a call of p is
    // committed job by job, so no other customer's call fails with it.
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (addr, taken, other) = (daemon.addr.clone(), taken.clone(), other.clone());
            std::thread::spawn(move || {
                let auth = format!("Bearer {TOKEN}");
                let mut answers = Vec::new();
                for n in 0..15 {
                    for (customer, expected) in [(&taken, 500), (&other, 200)] {
                        let body = ping(customer, &format!("k{client}-{n}"), n);
                        let response = request(&addr, "POST", "/v1/track", Some(&body), Some(&auth)).expect("request");
                        answers.push((customer.clone(), response.status, expected, response.body));
                    }
                }
                answers
            })
        })
        .collect();
    for client in clients {
        for (customer, status, expected, body) in client.join().expect("client") {
            assert_eq!(status, expected, "{customer}: {body}");
        }
    }
    assert_eq!(daemon.get(&format!("/v1/customers/{other}")).status, 200);
    let health = daemon.get("/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ok", "{}", health.body);

    // The other node's lease expires: this one claims p back and applies it.
    expire_lease(pg, p);
    eventually("the partition claimed back", || {
        (daemon.post("/v1/track", &ping(&taken, "m9", 9)).status == 200).then_some(())
    });
    assert_eq!(daemon.get(&format!("/v1/customers/{taken}")).status, 200);
    eventually("the sends of both customers", || {
        let sent: BTreeSet<String> = sends(&env.data())
            .iter()
            .filter_map(|l| l["customer"].as_str().map(str::to_string))
            .collect();
        (sent.contains(&taken) && sent.contains(&other)).then_some(())
    });
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn a_paused_owner_commits_nothing_after_a_standby_took_over() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let mut first = env.start(&[]);
    let (second, second_data) = node(&env, "second");
    assert_eq!(second.role().as_deref(), Some("standby"));
    let second_node = request(&second.addr, "GET", "/healthz", None, None)
        .expect("healthz")
        .json()["node"]
        .as_str()
        .expect("node")
        .to_string();

    // Acked by the first node, each with a timer due in 2 s; paused at once,
    // so those timers fall due while it cannot run.
    let customers: Vec<String> = (0..5).map(|i| format!("paused{i}")).collect();
    for customer in &customers {
        assert_eq!(first.post("/v1/track", &bought(customer)).status, 200);
    }
    first.signal("STOP");
    second.wait_until_owner();
    assert_eq!(
        pg.psql("SELECT owner || ' ' || epoch FROM journeyc_leases WHERE partition = -1")
            .trim(),
        format!("{second_node} 2")
    );

    // A request waits in the paused node's socket; then it runs again.
    let addr = first.addr.clone();
    let late = std::thread::spawn(move || {
        let auth = format!("Bearer {TOKEN}");
        request(&addr, "POST", "/v1/track", Some(&bought("fenced")), Some(&auth)).map(|r| r.status)
    });
    std::thread::sleep(Duration::from_millis(300));
    first.signal("CONT");
    assert_eq!(
        exit_code(&mut first),
        Some(2),
        "a node that lost its lease stops with an error"
    );
    let log = std::fs::read_to_string(env.data().join("daemon.log")).expect("log");
    assert!(
        log.contains("lease lost: partition -1 (the whole store) now owned by"),
        "{log}"
    );
    let late = late.join().expect("late request");
    assert!(
        !matches!(late, Ok(200)),
        "the paused node acked a write after the takeover: {late:?}"
    );

    // The new owner fired the timers that fell due; the old one committed
    // none of them and nothing of the late request.
    eventually("the new owner's timer sends", || {
        let later: BTreeSet<String> = sends(&second_data)
            .iter()
            .filter(|l| l["message"] == "later")
            .filter_map(|l| l["customer"].as_str().map(str::to_string))
            .collect();
        customers.iter().all(|c| later.contains(c)).then_some(())
    });
    assert_eq!(second.get("/v1/customers/fenced").status, 404);
    assert_eq!(second.terminate(), Some(0));
    let first_sends = sends(&env.data());
    assert!(
        first_sends
            .iter()
            .all(|l| l["message"] != "later" && l["customer"] != "fenced"),
        "the paused node committed after the takeover: {first_sends:?}"
    );
    let sent = one_id_per_message(&[&env.data(), &second_data]);
    for customer in &customers {
        for message in ["hello", "later"] {
            assert!(
                sent.contains(&(customer.clone(), message.to_string())),
                "{customer} {message}"
            );
        }
    }
    assert!(sent.iter().all(|(customer, _)| customer != "fenced"));
}

#[test]
fn a_standby_takes_over_from_a_killed_owner_and_loses_no_acked_event() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let first = env.start(&[]);
    let (second, second_data) = node(&env, "second");
    let (third, third_data) = node(&env, "third");
    assert_eq!(second.role().as_deref(), Some("standby"));
    assert_eq!(third.role().as_deref(), Some("standby"));
    let addrs = Arc::new(Mutex::new(vec![
        first.addr.clone(),
        second.addr.clone(),
        third.addr.clone(),
    ]));

    // Clients post to every node in turn (a standby writes to the inbox),
    // moving on at a refusal or a cut connection (the killed owner).
    let posters = Posters::start(&addrs, "p", false);
    let root = env.root.path().to_path_buf();
    let acked_more_than = |n: usize| posters.acked_more_than(n, &root);
    acked_more_than(60);

    // kill -9 the owner with timers pending (each event's is due 2 s on)
    // and batches in flight; a standby takes over.
    first.kill();
    let killed_at = posters.count();
    eventually("a standby's takeover", || {
        [&second, &third]
            .into_iter()
            .any(|node| node.role().as_deref() == Some("ok"))
            .then_some(())
    });
    acked_more_than(killed_at + 60);
    // The new owner took every partition's lease too (they expired with the
    // killed node's lease of the store), each at epoch 2, and no other node
    // holds any.
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    assert_eq!(
        pg.psql(
            "SELECT count(*) || ' ' || count(DISTINCT owner) || ' ' || min(epoch) || ' ' || max(epoch) \
             FROM journeyc_leases"
        )
        .trim(),
        "257 1 2 2"
    );
    // The killed node comes back, as a standby now.
    let restarted = start_on(&env, &env.data());
    assert_eq!(restarted.role().as_deref(), Some("standby"));
    addrs.lock().expect("lock")[0] = restarted.addr.clone();
    let restarted_at = posters.count();
    acked_more_than(restarted_at + 20);

    // Every acked event's send and its timer's send, exactly once.
    let acknowledged = posters.finish();
    every_send_once(
        &[env.data(), second_data, third_data],
        &acknowledged,
        vec![restarted, second, third],
    );
}

#[test]
fn calls_posted_to_a_standby_are_applied_by_the_owner_exactly_once_across_a_kill() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, standby_data) = node(&env, "standby");
    assert_eq!(standby.role().as_deref(), Some("standby"));
    let inbox_rows = || {
        pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 105")
            .trim()
            .to_string()
    };

    // Acked by the standby, applied by the owner.
    for i in 0..10 {
        let response = standby.post("/v1/track", &bought(&format!("s{i}")));
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let refused = standby.post(
        "/v1/track",
        r#"{"userId":"x","event":"bought","properties":{"amount":"no"}}"#,
    );
    assert_eq!(
        refused.status, 422,
        "a refused call is answered and kept as on the owner: {}",
        refused.body
    );
    eventually("the owner's sends of the standby's calls", || {
        let sent: BTreeSet<String> = sends(&env.data())
            .iter()
            .filter(|l| l["message"] == "hello")
            .filter_map(|l| l["customer"].as_str().map(str::to_string))
            .collect();
        (0..10).all(|i| sent.contains(&format!("s{i}"))).then_some(())
    });
    assert_eq!(owner.get("/v1/customers/s3").status, 200);
    eventually("an empty inbox", || (inbox_rows() == "0").then_some(()));
    // The owner listens for the inbox's notifications.
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN journeyc_inbox'")
            .trim(),
        "1"
    );

    // Batches keep coming to the standby while the owner is killed -9 in
    // the middle of applying them; the standby then takes over and applies
    // the rest itself, the restarted one takes intake as a standby.
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = Arc::new(Mutex::new(standby.addr.clone()));
    let poster = {
        let (acknowledged, stop, addr) = (acknowledged.clone(), stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut batch_number = 0;
            while !stop.load(Ordering::Relaxed) && batch_number < 5000 {
                let customers: Vec<String> = (0..10).map(|i| format!("k{batch_number}e{i}")).collect();
                let events: Vec<String> = customers.iter().map(|c| bought(c)).collect();
                let body = format!("{{\"batch\":[{}]}}", events.join(","));
                let auth = format!("Bearer {TOKEN}");
                let to = addr.lock().expect("lock").clone();
                if let Ok(response) = request(&to, "POST", "/v1/batch", Some(&body), Some(&auth)) {
                    if response.status == 200 {
                        acknowledged.lock().expect("lock").extend(customers);
                    }
                }
                batch_number += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let acked_more_than = |n: usize| {
        eventually("more acknowledged batches", || {
            (acknowledged.lock().expect("lock").len() > n).then_some(())
        })
    };
    acked_more_than(50);
    owner.kill();
    let killed_at = acknowledged.lock().expect("lock").len();
    standby.wait_until_owner();
    acked_more_than(killed_at + 50);
    let restarted = start_on(&env, &env.data());
    assert_eq!(restarted.role().as_deref(), Some("standby"));
    *addr.lock().expect("lock") = restarted.addr.clone();
    let restarted_at = acknowledged.lock().expect("lock").len();
    acked_more_than(restarted_at + 50);
    stop.store(true, Ordering::Relaxed);
    poster.join().expect("poster");

    let acknowledged = acknowledged.lock().expect("lock").clone();
    eventually("an empty inbox", || (inbox_rows() == "0").then_some(()));
    every_send_once(&[env.data(), standby_data], &acknowledged, vec![restarted, standby]);
}

/// [`WORKSPACE`] with a wait long enough to stop a daemon, change its
/// database and start it again before the timers are due.
fn long_wait_workspace() -> String {
    WORKSPACE.replace("pause: wait 2s", "pause: wait 20s")
}

/// `bought` calls of `customers` in one `/v1/batch` body, all at `at`.
fn bought_batch(customers: &[String], at: &str) -> String {
    let calls: Vec<String> = customers
        .iter()
        .map(|c| bought(c).replacen('{', &format!(r#"{{"timestamp":"{at}","#), 1))
        .collect();
    format!(r#"{{"batch":[{}]}}"#, calls.join(","))
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The rows with key prefix `prefix` as the table has them: partition,
/// key, value.
fn rows(pg: &super::pg::Postgres, prefix: u8) -> Vec<(i32, Vec<u8>, Vec<u8>)> {
    pg.psql(&format!(
        "SELECT partition || ' ' || encode(key, 'hex') || ' ' || encode(value, 'hex') FROM journeyc_kv \
         WHERE get_byte(key, 0) = {prefix} ORDER BY key"
    ))
    .lines()
    .filter(|line| !line.trim().is_empty())
    .map(|line| {
        let mut fields = line.trim().split(' ');
        let partition = fields.next().expect("partition").parse().expect("a partition");
        let key = unhex(fields.next().expect("key"));
        let value = unhex(fields.next().unwrap_or(""));
        (partition, key, value)
    })
    .collect()
}

/// The timer index as stored: for each entry, its row's partition and its
/// due time, chunk number and customers.
fn timer_rows(pg: &super::pg::Postgres) -> Vec<(i32, journeyc::daemon::store::TimerEntry)> {
    rows(pg, b't')
        .into_iter()
        .map(|(partition, key, value)| {
            let entry = journeyc::daemon::store::decode_timer_entry(&key, &value).expect("a timer entry");
            (partition, entry)
        })
        .collect()
}

/// Checks the per-partition timer index of a PostgreSQL store: every entry
/// lists customers of one partition and is stored in that partition; every
/// waiting customer's record names an entry of its own partition that lists
/// it. Answers the customers waiting.
fn timers_kept_per_partition(pg: &super::pg::Postgres) -> BTreeSet<String> {
    let entries = timer_rows(pg);
    let mut listed: BTreeMap<(i32, u64), BTreeSet<String>> = BTreeMap::new();
    for (partition, entry) in &entries {
        assert!(*partition >= 0, "a timer entry at partition {partition}: {entry:?}");
        for customer in &entry.customers {
            assert_eq!(
                partition_of(format!("c{customer}").as_bytes(), 256),
                *partition,
                "{customer} listed in a chunk of another partition: {entry:?}"
            );
        }
        let chunk = entry.chunk.expect("a chunk");
        listed.insert((*partition, chunk), entry.customers.iter().cloned().collect());
    }
    let mut waiting = BTreeSet::new();
    let names = rows(pg, b'n').into_iter().map(|(_, key, value)| {
        let id = u32::from_be_bytes(key[1..].try_into().expect("a name id"));
        (
            id,
            journeyc::runtime::names::Name::intern(std::str::from_utf8(&value).expect("a name")),
        )
    });
    let names = std::sync::Arc::new(journeyc::runtime::names::Dictionary::with(names));
    for (partition, key, value) in rows(pg, b'c') {
        let (state, chunk) = journeyc::daemon::store::decode_customer_with(&names, &key, &value).expect("a customer");
        let Some(chunk) = chunk else { continue };
        let list = listed.get(&(partition, chunk));
        assert!(
            list.is_some_and(|list| list.contains(&state.id)),
            "{} (partition {partition}) names chunk {chunk}, which its partition does not have listing it",
            state.id
        );
        waiting.insert(state.id.clone());
    }
    waiting
}

#[test]
fn timer_chunks_list_customers_of_one_partition_and_are_stored_in_it() {
    if skip() {
        return;
    }
    let env = Env::on(&long_wait_workspace(), Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let daemon = env.start(&[]);
    let customers: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    // All at one instant: due at one instant, so one chunk on sled.
    let at = (chrono::Utc::now() - chrono::Duration::seconds(12)).to_rfc3339();
    let response = daemon.post("/v1/batch", &bought_batch(&customers, &at));
    assert_eq!(response.status, 200, "{}", response.body);
    let waiting = timers_kept_per_partition(pg);
    assert_eq!(waiting.len(), customers.len(), "every customer waits: {waiting:?}");
    let partitions: BTreeSet<i32> = timer_rows(pg).into_iter().map(|(p, _)| p).collect();
    assert!(partitions.len() > 10, "40 customers' timers in {partitions:?}");
    assert_eq!(pg.migrations(), super::pg::Postgres::every_migration());
    let acknowledged: BTreeSet<String> = customers.iter().cloned().collect();
    every_send_once(&[env.data()], &acknowledged, vec![daemon]);
    assert!(timer_rows(pg).is_empty(), "every chunk fired and removed");
}

/// A PostgreSQL store written before timer chunks were kept per partition
/// (every chunk at partition -1, mixing partitions, numbered by
/// `mtimerchunk`; schema version 2) has its chunks moved into their
/// customers' partitions when a daemon opens it, and every timer fires
/// once.
#[test]
fn a_store_with_timer_chunks_at_partition_none_is_moved_into_partitions_at_open() {
    if skip() {
        return;
    }
    let env = Env::on(&long_wait_workspace(), Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let daemon = env.start(&[]);
    let customers: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
    let at = (chrono::Utc::now() - chrono::Duration::seconds(6)).to_rfc3339();
    let response = daemon.post("/v1/batch", &bought_batch(&customers, &at));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(daemon.terminate(), Some(0));
    // Today's layout before this store version: one chunk per due time
    // listing every customer due then (whatever their partitions), at
    // partition -1, numbered from `mtimerchunk`; no chunk sequence. (The
    // outbox's sequence, of a later step, is kept: the sink's file and
    // cursors hold its numbers; its step creates it only if missing.)
    pg.psql(
        "BEGIN; \
         CREATE TEMP TABLE chunks AS SELECT key, value, substr(key, 2, 8) AS due, substr(key, 10, 8) AS number, \
             dense_rank() OVER (ORDER BY substr(key, 2, 8)) AS legacy \
             FROM journeyc_kv WHERE get_byte(key, 0) = 116; \
         UPDATE journeyc_kv AS c SET value = overlay(c.value PLACING int8send(k.legacy) FROM length(c.value) - 7) \
             FROM chunks AS k WHERE get_byte(c.key, 0) = 99 AND substr(c.value, length(c.value) - 7) = k.number; \
         DELETE FROM journeyc_kv WHERE get_byte(key, 0) = 116; \
         INSERT INTO journeyc_kv SELECT -1, '\\x74'::bytea || due || int8send(legacy), \
             set_byte('\\x00'::bytea, 0, sum(get_byte(value, 0))::integer) \
             || string_agg(substr(value, 2), ''::bytea ORDER BY key) FROM chunks GROUP BY due, legacy; \
         INSERT INTO journeyc_kv VALUES (-1, 'mtimerchunk'::bytea, int8send((SELECT max(legacy) + 1 FROM chunks))) \
             ON CONFLICT (partition, key) DO UPDATE SET value = EXCLUDED.value; \
         DELETE FROM journeyc_migrations WHERE version >= 3; \
         DROP SEQUENCE journeyc_timer_chunks; \
         COMMIT;",
    );
    let old = timer_rows(pg);
    assert!(old.iter().all(|(p, _)| *p == -1), "{old:?}");
    let listed: usize = old.iter().map(|(_, e)| e.customers.len()).sum();
    assert_eq!(listed, customers.len(), "{old:?}");
    let mixed = old.iter().any(|(_, e)| {
        let partitions: BTreeSet<i32> = e
            .customers
            .iter()
            .map(|c| partition_of(format!("c{c}").as_bytes(), 256))
            .collect();
        partitions.len() > 1
    });
    assert!(mixed, "a chunk of the old layout mixes partitions: {old:?}");

    let daemon = env.start(&[]);
    let waiting = timers_kept_per_partition(pg);
    assert_eq!(
        waiting.len(),
        customers.len(),
        "every customer still waits: {waiting:?}"
    );
    assert_eq!(pg.migrations(), super::pg::Postgres::every_migration());
    let acknowledged: BTreeSet<String> = customers.iter().cloned().collect();
    every_send_once(&[env.data()], &acknowledged, vec![daemon]);
    assert!(timer_rows(pg).is_empty(), "every chunk fired and removed");
}

/// The timer task fires the chunks of the partitions this node holds: a
/// partition taken over by another node holds up no other customer's
/// wake-up, and its own fire once it is claimed back.
#[test]
fn timers_of_a_partition_taken_over_wait_for_it_and_the_others_fire() {
    if skip() {
        return;
    }
    let env = Env::on(&long_wait_workspace(), Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let daemon = env.start(&[]);
    let customers: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    let p = partition_of(format!("c{}", customers[0]).as_bytes(), 256);
    let (held_up, free): (Vec<String>, Vec<String>) = customers
        .iter()
        .cloned()
        .partition(|c| partition_of(format!("c{c}").as_bytes(), 256) == p);
    assert!(free.len() > 30, "{held_up:?}");
    // Due in about 8 s, all in one pass of the timer task.
    let at = (chrono::Utc::now() - chrono::Duration::seconds(12)).to_rfc3339();
    let response = daemon.post("/v1/batch", &bought_batch(&customers, &at));
    assert_eq!(response.status, 200, "{}", response.body);
    take_over(pg, p);
    let later = |customer: &str| {
        sends(&env.data())
            .iter()
            .filter(|l| l["customer"] == customer && l["message"] == "later")
            .count()
    };
    eventually("the other partitions' wake-ups", || {
        free.iter().all(|c| later(c) == 1).then_some(())
    });
    assert!(
        held_up.iter().all(|c| later(c) == 0),
        "{held_up:?} fired in a partition not held"
    );
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 116 AND partition = {p}"
        ))
        .trim(),
        "1",
        "the chunk of {p} waits for its owner"
    );
    // The other node's lease expires: this one claims p back and fires it.
    expire_lease(pg, p);
    let acknowledged: BTreeSet<String> = customers.iter().cloned().collect();
    every_send_once(&[env.data()], &acknowledged, vec![daemon]);
}

/// The records of counter `name`: partition → value.
fn counter_rows(pg: &super::pg::Postgres, name: &str) -> BTreeMap<i32, i64> {
    rows(pg, b's')
        .into_iter()
        .filter_map(|(partition, key, value)| {
            let (found, _) = journeyc::daemon::store::decode_stat_key(&key);
            (found == name).then(|| (partition, i64::from_be_bytes(value.try_into().expect("an i64"))))
        })
        .collect()
}

/// On PostgreSQL each counter is kept per partition, in the records of the
/// partition of the customers it counts; stats read the sum. A store
/// written before (one total per counter at partition -1) keeps its totals
/// there, summed in with what is counted after.
#[test]
fn counters_are_kept_per_partition_and_summed_with_the_totals_of_a_store_written_before() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let daemon = env.start(&[]);
    let first: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
    let at = chrono::Utc::now().to_rfc3339();
    assert_eq!(daemon.post("/v1/batch", &bought_batch(&first, &at)).status, 200);
    let entered = counter_rows(pg, "j/delayed/entered");
    assert!(!entered.contains_key(&-1), "{entered:?}");
    assert!(entered.len() > 10, "40 customers counted in {entered:?}");
    for (partition, count) in &entered {
        let here = first
            .iter()
            .filter(|c| partition_of(format!("c{c}").as_bytes(), 256) == *partition)
            .count();
        assert_eq!(*count, here as i64, "partition {partition}");
    }
    let stats = daemon.get("/v1/journeys/delayed/stats").json();
    assert_eq!(stats["entered"], 40, "{stats}");
    assert_eq!(daemon.terminate(), Some(0));

    // The layout before: one total per counter, at partition -1.
    pg.psql(
        "BEGIN; \
         CREATE TEMP TABLE totals AS SELECT CASE WHEN length(key) > 3 AND get_byte(key, length(key) - 3) = 0 \
             THEN substr(key, 1, length(key) - 3) ELSE key END AS name, \
             sum(('x' || encode(value, 'hex'))::bit(64)::bigint) AS total \
             FROM journeyc_kv WHERE get_byte(key, 0) = 115 GROUP BY 1; \
         DELETE FROM journeyc_kv WHERE get_byte(key, 0) = 115; \
         INSERT INTO journeyc_kv SELECT -1, name, int8send(total::bigint) FROM totals; \
         COMMIT;",
    );
    assert_eq!(counter_rows(pg, "j/delayed/entered"), BTreeMap::from([(-1, 40)]));

    let daemon = env.start(&[]);
    let stats = daemon.get("/v1/journeys/delayed/stats").json();
    assert_eq!(stats["entered"], 40, "the totals read as they were: {stats}");
    let second: Vec<String> = (0..40).map(|i| format!("q{i}")).collect();
    assert_eq!(daemon.post("/v1/batch", &bought_batch(&second, &at)).status, 200);
    let entered = counter_rows(pg, "j/delayed/entered");
    assert_eq!(entered.get(&-1), Some(&40), "the old total stays: {entered:?}");
    assert_eq!(entered.values().sum::<i64>(), 80, "{entered:?}");
    let stats = daemon.get("/v1/journeys/delayed/stats").json();
    assert_eq!(stats["entered"], 80, "{stats}");
    let acknowledged: BTreeSet<String> = first.iter().chain(&second).cloned().collect();
    every_send_once(&[env.data()], &acknowledged, vec![daemon]);
    // Every customer has left its wait: the waiting count sums to zero.
    assert_eq!(counter_rows(pg, "g/timers").values().sum::<i64>(), 0);
}

/// `ping` calls of `customers` (message ids `prefix` + index) in one
/// `/v1/batch` body.
fn ping_batch(customers: &[String], prefix: &str) -> String {
    let calls: Vec<String> = (customers.iter().enumerate())
        .map(|(i, c)| ping(c, &format!("{prefix}{i}"), i as i64))
        .collect();
    format!(r#"{{"batch":[{}]}}"#, calls.join(","))
}

/// The customers an inbox record's calls name, in their order.
fn record_customers(value: &[u8]) -> Vec<String> {
    let calls: Vec<serde_json::Value> = serde_json::from_slice(value).expect("an inbox record is JSON calls");
    calls
        .iter()
        .map(|call| call["customer"].as_str().expect("a customer").to_string())
        .collect()
}

/// The id and partition an inbox key's number carries (`2^63 | id << 16 |
/// partition`).
fn inbox_number(key: &[u8]) -> (u64, i32) {
    assert_eq!(key.len(), 9, "{key:?}");
    let number = u64::from_be_bytes(key[1..9].try_into().expect("8 bytes"));
    assert_ne!(number & (1 << 63), 0, "a partitioned number: {number:#x}");
    ((number & !(1 << 63)) >> 16, (number & 0xffff) as i32)
}

/// A standby's request naming customers of several partitions is written
/// as one inbox record per partition (each stored in its partition, with
/// that partition's calls in request order, all with one id), in one
/// transaction; the owner applies every one of them once it holds the
/// partitions.
#[test]
fn a_standby_writes_one_inbox_record_per_partition_and_the_owner_applies_them_all() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = node(&env, "standby");
    // Every partition held by another node for now: the owner applies no
    // record, so the records stay to be read.
    pg.psql(
        "UPDATE journeyc_leases SET owner = 'journeyc-other', epoch = epoch + 1, \
         expires_at = now() + interval '1 hour' WHERE partition >= 0",
    );
    let customers: Vec<String> = (0..12).map(|i| format!("span{i}")).collect();
    let partition = |c: &str| partition_of(format!("c{c}").as_bytes(), 256);
    let mut expected: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for customer in &customers {
        expected.entry(partition(customer)).or_default().push(customer.clone());
    }
    // Twice the first customer: its calls share its record, in order.
    let mut named = customers.clone();
    named.push(customers[0].clone());
    expected
        .get_mut(&partition(&customers[0]))
        .expect("its partition")
        .push(customers[0].clone());
    assert!(expected.len() > 5, "{expected:?}");
    let response = standby.post("/v1/batch", &ping_batch(&named, "s"));
    assert_eq!(response.status, 200, "{}", response.body);

    let records = rows(pg, b'i');
    let mut written: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (stored_in, key, value) in &records {
        let (id, numbered) = inbox_number(key);
        assert_eq!(*stored_in, numbered, "stored in the partition its key names");
        assert_eq!(partition_of(key, 256), numbered);
        ids.insert(id);
        let previous = written.insert(numbered, record_customers(value));
        assert!(previous.is_none(), "two records of partition {numbered}");
    }
    assert_eq!(
        written, expected,
        "one record per partition, its calls in request order"
    );
    assert_eq!(ids.len(), 1, "one id for the request's records: {ids:?}");

    // The partitions free again: the owner claims them and applies all.
    pg.psql("UPDATE journeyc_leases SET expires_at = now() - interval '1 second' WHERE partition >= 0");
    eventually("an empty inbox", || rows(pg, b'i').is_empty().then_some(()));
    for customer in &customers {
        assert_eq!(
            owner.get(&format!("/v1/customers/{customer}")).status,
            200,
            "{customer}"
        );
    }
    eventually("a hello per call", || {
        let hellos = sends(&env.data()).iter().filter(|l| l["message"] == "hello").count();
        (hellos >= named.len()).then_some(hellos)
    });
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(standby.terminate(), Some(0));
    let sent = sends(&env.data());
    for customer in &customers {
        let times = if *customer == customers[0] { 2 } else { 1 };
        let hellos = sent
            .iter()
            .filter(|l| l["customer"] == customer.as_str() && l["message"] == "hello");
        assert_eq!(hellos.count(), times, "{customer}: {sent:?}");
    }
}

/// Waits at most `limit` for `check`.
fn within<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A partition taken over by another node holds up its own inbox records
/// only: calls posted to a standby after one naming a customer of it (in
/// requests of their own, or beside it in one batch) are applied at once,
/// a `DELETE` through the standby too; the held-up records are applied
/// once the partition is claimed back.
#[test]
fn inbox_records_of_a_partition_taken_over_hold_up_no_other_partition() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = node(&env, "standby");
    let ((taken, p), (other, _)) = two_partitions();
    let third = (0..)
        .map(|i| format!("third{i}"))
        .find(|c| partition_of(format!("c{c}").as_bytes(), 256) != p && *c != other)
        .expect("a third customer");
    take_over(pg, p);
    // The owner still takes itself for p's holder: its first try at p's
    // record is refused inside the transaction.
    assert_eq!(standby.post("/v1/track", &ping(&taken, "t1", 1)).status, 200);
    assert_eq!(standby.post("/v1/track", &ping(&other, "o1", 1)).status, 200);
    let mixed = format!(r#"{{"batch":[{},{}]}}"#, ping(&taken, "t2", 2), ping(&third, "x1", 1));
    assert_eq!(standby.post("/v1/batch", &mixed).status, 200);
    let limit = Duration::from_secs(10);
    within(limit, "the other partitions' calls applied", || {
        let applied = [&other, &third]
            .iter()
            .all(|c| owner.get(&format!("/v1/customers/{c}")).status == 200);
        applied.then_some(())
    });
    within(limit, "only p's records left", || {
        let left = rows(pg, b'i');
        (left.len() == 2 && left.iter().all(|(partition, _, _)| *partition == p)).then_some(())
    });
    assert_eq!(owner.get(&format!("/v1/customers/{taken}")).status, 404);
    // A command naming a customer of a held partition is applied meanwhile.
    let erased = standby.request("DELETE", &format!("/v1/customers/{third}"), None);
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(erased.json()["erased"], third.as_str(), "{}", erased.body);
    assert_eq!(owner.get(&format!("/v1/customers/{third}")).status, 404);

    // p claimed back: its records are applied, in their order.
    expire_lease(pg, p);
    eventually("an empty inbox", || rows(pg, b'i').is_empty().then_some(()));
    let customer = owner.get(&format!("/v1/customers/{taken}"));
    assert_eq!(customer.status, 200, "{}", customer.body);
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(standby.terminate(), Some(0));
    let sent = sends(&env.data());
    let hellos = |c: &str| {
        sent.iter()
            .filter(|l| l["customer"] == c && l["message"] == "hello")
            .count()
    };
    assert_eq!((hellos(&taken), hellos(&other)), (2, 1), "{sent:?}");
}

/// Inbox and command records written before the inbox was kept per
/// partition (a plain id, at partition -1, one record for calls of any
/// partitions) are still applied, in their order: the calls, then the
/// erasure handed over after them, answered at the command's own key.
#[test]
fn inbox_and_command_records_of_the_old_layout_are_still_applied() {
    if skip() {
        return;
    }
    use journeyc::daemon::command::Command;
    use journeyc::daemon::inbox;
    use journeyc::runtime::input::{Call, Input};
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    // Another node writing through the store as the code before did.
    let writer = Pg::open(&pg.url(), Duration::from_secs(2)).expect("open");
    assert_eq!(writer.lease(), LeaseState::Standby);
    let customers: Vec<String> = (0..6).map(|i| format!("old{i}")).collect();
    let spread: BTreeSet<i32> = (customers.iter())
        .map(|c| partition_of(format!("c{c}").as_bytes(), 256))
        .collect();
    assert!(spread.len() > 2, "{spread:?}");
    let at = chrono::Utc::now().timestamp_millis();
    let calls: Vec<Call> = (customers.iter())
        .map(|customer| Call {
            customer: customer.clone(),
            input: Input::Identify {
                traits: Default::default(),
                subscriptions: Default::default(),
                at,
                message_id: None,
            },
            merge: None,
            fill: Default::default(),
            group: None,
        })
        .collect();
    let (record, command) = (writer.generate_id().expect("id"), writer.generate_id().expect("id"));
    let command_key = [&[b'q'][..], &command.to_be_bytes()].concat();
    assert_eq!(partition_of(&inbox::key(record), 256), -1);
    assert_eq!(partition_of(&command_key, 256), -1);
    let mut batch = Batch::default();
    batch.insert(inbox::key(record), inbox::encode(&calls));
    let erase = Command::Erase {
        customer: customers[0].clone(),
    };
    batch.insert(command_key, serde_json::to_vec(&erase).expect("JSON"));
    writer
        .apply_unfenced(batch, Some(journeyc::daemon::kv::pg::CHANNEL_INBOX))
        .expect("written");
    writer
        .notify(journeyc::daemon::kv::pg::CHANNEL_COMMANDS)
        .expect("notified");
    eventually("the calls and then the erasure applied", || {
        let kept = customers[1..]
            .iter()
            .all(|c| owner.get(&format!("/v1/customers/{c}")).status == 200);
        (kept && owner.get(&format!("/v1/customers/{}", customers[0])).status == 404).then_some(())
    });
    assert!(rows(pg, b'i').is_empty());
    assert!(rows(pg, b'q').is_empty());
    let answers = rows(pg, b'Q');
    assert_eq!(answers.len(), 1, "{answers:?}");
    let (partition, key, value) = &answers[0];
    assert_eq!((*partition, &key[1..]), (-1, &command.to_be_bytes()[..]));
    let answer: serde_json::Value = serde_json::from_slice(value).expect("JSON");
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"]["known"], true, "{answer}");
    drop(writer);
    assert_eq!(owner.terminate(), Some(0));
}

/// A command naming a customer is stored in that customer's partition and
/// applied by its holder: with partition p taken over, an erasure of p's
/// customer (behind an inbox record of p written before it) waits, while
/// an erasure of another partition's customer written after it is
/// answered at once; p claimed back, p's record is applied and then its
/// erasure, answered at the command's key in p.
#[test]
fn a_command_of_a_partition_taken_over_holds_up_no_other_partitions_command() {
    if skip() {
        return;
    }
    use journeyc::daemon::command::Command;
    use journeyc::daemon::inbox;
    use journeyc::runtime::input::{Call, Input};
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let ((taken, p), (other, q)) = two_partitions();
    assert_eq!(owner.post("/v1/track", &ping(&other, "o1", 1)).status, 200);
    take_over(pg, p);
    let writer = Pg::open(&pg.url(), Duration::from_secs(2)).expect("open");
    let number = |partition: i32| {
        let id = writer.generate_id().expect("id");
        inbox::partitioned_number(id, partition).expect("a number")
    };
    let identify = Call {
        customer: taken.clone(),
        input: Input::Identify {
            traits: Default::default(),
            subscriptions: Default::default(),
            at: chrono::Utc::now().timestamp_millis(),
            message_id: None,
        },
        merge: None,
        fill: Default::default(),
        group: None,
    };
    let (record, erase_taken, erase_other) = (number(p), number(p), number(q));
    let command_key = |n: u64| [&[b'q'][..], &n.to_be_bytes()].concat();
    let erase = |customer: &str| {
        serde_json::to_vec(&Command::Erase {
            customer: customer.to_string(),
        })
        .expect("JSON")
    };
    let mut batch = Batch::default();
    batch.insert(inbox::key(record), inbox::encode(&[identify]));
    batch.insert(command_key(erase_taken), erase(&taken));
    batch.insert(command_key(erase_other), erase(&other));
    writer
        .apply_unfenced(batch, Some(journeyc::daemon::kv::pg::CHANNEL_INBOX))
        .expect("written");
    writer
        .notify(journeyc::daemon::kv::pg::CHANNEL_COMMANDS)
        .expect("notified");
    let answer = |n: u64| {
        rows(pg, b'Q')
            .into_iter()
            .find(|(_, key, _)| key[1..] == n.to_be_bytes())
            .map(|(partition, _, value)| {
                let answer: serde_json::Value = serde_json::from_slice(&value).expect("JSON");
                (partition, answer)
            })
    };
    let (stored_in, answered) = within(
        Duration::from_secs(10),
        "the other partition's erasure answered",
        || answer(erase_other),
    );
    assert_eq!((stored_in, answered["status"].clone()), (q, 200.into()), "{answered}");
    assert_eq!(owner.get(&format!("/v1/customers/{other}")).status, 404);
    let waiting: Vec<i32> = rows(pg, b'q').into_iter().map(|(partition, _, _)| partition).collect();
    assert_eq!(waiting, vec![p], "p's erasure waits in p");
    assert!(answer(erase_taken).is_none());

    expire_lease(pg, p);
    let (stored_in, answered) = eventually("p's erasure answered", || answer(erase_taken));
    assert_eq!(stored_in, p);
    // The identify came first: there was a customer to erase.
    assert_eq!(answered["body"]["known"], true, "{answered}");
    assert!(rows(pg, b'i').is_empty());
    assert!(rows(pg, b'q').is_empty());
    assert_eq!(owner.get(&format!("/v1/customers/{taken}")).status, 404);
    drop(writer);
    assert_eq!(owner.terminate(), Some(0));
}

/// An outbox line as the commit thread writes one: a send of `customer`.
fn send_line(customer: &str, message: &str) -> String {
    format!(
        r#"{{"kind":"send","customer":"{customer}","journey":"j","message":"{message}","id":"{customer}-{message}"}}"#
    )
}

/// The cursors stored: (row partition, sink, partition the key names, seq).
fn cursor_rows(pg: &super::pg::Postgres) -> Vec<(i32, String, i32, u64)> {
    rows(pg, b'k')
        .into_iter()
        .map(|(row, key, value)| {
            let (sink, partition) = journeyc::daemon::store::decode_cursor_key(&key);
            (
                row,
                sink,
                partition,
                u64::from_be_bytes(value.try_into().expect("a u64")),
            )
        })
        .collect()
}

/// On PostgreSQL a group commit writes one outbox chunk per partition, its
/// records numbered with the partition in the number (`Pg::outbox_seq`),
/// stored in that partition; each sink keeps a cursor per partition there;
/// `mseq` is not written, and on one node the file's numbers ascend.
#[test]
fn outbox_records_and_sink_cursors_are_kept_per_partition() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let daemon = env.start(&[]);
    let customers: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    let at = chrono::Utc::now().to_rfc3339();
    assert_eq!(daemon.post("/v1/batch", &bought_batch(&customers, &at)).status, 200);
    let acknowledged: BTreeSet<String> = customers.iter().cloned().collect();
    every_send_once(&[env.data()], &acknowledged, vec![daemon]);
    assert_eq!(pg.migrations(), super::pg::Postgres::every_migration());
    let lines = sink_lines(&env.sends());
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let mut last_of: BTreeMap<i32, u64> = BTreeMap::new();
    for line in &lines {
        let seq = line["seq"].as_u64().expect("seq");
        let customer = line["customer"].as_str().expect("customer");
        let partition = partition_of(format!("c{customer}").as_bytes(), 256);
        assert_eq!(
            journeyc::daemon::kv::pg::seq_partition(seq),
            Some(partition),
            "{line}: its number names its customer's partition"
        );
        last_of.insert(partition, seq);
    }
    assert!(last_of.len() > 10, "40 customers' sends in {last_of:?}");
    let sink = format!("jsonl:{}", env.sends().display());
    let cursors: BTreeMap<i32, u64> = cursor_rows(pg)
        .into_iter()
        .map(|(row, name, partition, seq)| {
            assert_eq!(name, sink);
            assert_eq!(row, partition, "a cursor is stored in the partition it is of");
            (partition, seq)
        })
        .collect();
    assert_eq!(cursors, last_of, "each partition's cursor is its last record delivered");
    assert!(rows(pg, b'o').is_empty(), "every chunk delivered is removed");
    assert_eq!(
        pg.psql("SELECT count(*) FROM journeyc_kv WHERE key = 'mseq'::bytea")
            .trim(),
        "0"
    );
}

/// The sinks read the outbox of the partitions this node holds: records of
/// a partition taken over by another node wait for it (that node's to
/// deliver), the other partitions' go out, and once the node claims the
/// partition back its records go out once, its cursor moving on its own.
#[test]
fn the_outbox_of_a_partition_taken_over_waits_for_it_and_the_others_are_delivered() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    assert_eq!(env.start(&[]).terminate(), Some(0));
    let ((taken, p), (other, q)) = two_partitions();
    // Committed, not yet delivered: written as the commit thread writes them.
    let node = Pg::open(&pg.url(), Duration::from_secs(2)).expect("open");
    let mut batch = Batch::default();
    let mut numbers = BTreeMap::new();
    for (customer, partition) in [(&taken, p), (&other, q)] {
        let chunk: Vec<(u64, String)> = (0..3)
            .map(|i| {
                let seq = node.outbox_seq(partition).expect("a number");
                (seq, send_line(customer, &format!("m{i}")))
            })
            .collect();
        numbers.insert(partition, chunk.iter().map(|(seq, _)| *seq).collect::<Vec<_>>());
        batch.insert(
            journeyc::daemon::store::outbox_key(chunk[0].0),
            journeyc::daemon::store::encode_chunk(&chunk),
        );
    }
    node.apply(None, batch).expect("the chunks commit");
    node.release().expect("release");
    drop(node);
    let chunks = rows(pg, b'o');
    assert_eq!(
        chunks.iter().map(|(row, _, _)| *row).collect::<BTreeSet<_>>(),
        BTreeSet::from([p, q]),
        "each chunk in its partition"
    );
    take_over(pg, p);
    let daemon = env.start(&[]);
    let sent = |customer: &str| sends(&env.data()).iter().filter(|l| l["customer"] == customer).count();
    eventually("the other partition's sends", || (sent(&other) == 3).then_some(()));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        sent(&taken),
        0,
        "sends of partition {p} went out while another node holds it"
    );
    let cursors = || -> BTreeMap<i32, u64> {
        cursor_rows(pg)
            .into_iter()
            .map(|(_, _, partition, seq)| (partition, seq))
            .collect()
    };
    assert_eq!(cursors(), BTreeMap::from([(q, numbers[&q][2])]));
    assert_eq!(
        rows(pg, b'o').iter().map(|(row, _, _)| *row).collect::<Vec<_>>(),
        vec![p],
        "the delivered chunk is removed, p's waits"
    );
    // The other node's lease expires: this one claims p and delivers it.
    expire_lease(pg, p);
    eventually("partition p's sends once it is held", || {
        (sent(&taken) == 3).then_some(())
    });
    eventually("both cursors", || {
        (cursors() == BTreeMap::from([(p, numbers[&p][2]), (q, numbers[&q][2])])).then_some(())
    });
    assert_eq!(daemon.terminate(), Some(0));
    let expected: BTreeSet<(String, String)> = [&taken, &other]
        .iter()
        .flat_map(|c| (0..3).map(move |i| (c.to_string(), format!("m{i}"))))
        .collect();
    assert_eq!(one_id_per_message(&[&env.data()]), expected);
    assert!(rows(pg, b'o').is_empty());
}

/// A PostgreSQL store written before the outbox was kept per partition
/// (chunks numbered by `mseq` at partition -1, one cursor per sink, dead
/// letters under those numbers) is delivered as it is, by the holder of the
/// store's lease: its records after the sink's cursor go out once (a record
/// the file already holds past the cursor, appended before a crash, is not
/// appended again), then the new per-partition records.
#[test]
fn a_store_with_the_outbox_at_partition_none_is_delivered_as_it_is_then_per_partition() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    assert_eq!(env.start(&[]).terminate(), Some(0));
    let sink = format!("jsonl:{}", env.sends().display());
    let old: Vec<(u64, String)> = [(1, "a", "m1"), (2, "b", "m1"), (3, "a", "m2"), (4, "b", "m2")]
        .iter()
        .map(|(seq, customer, message)| (*seq, send_line(&format!("old-{customer}"), message)))
        .collect();
    // The old layout, through the key-value contract: plain numbers.
    let node = Pg::open(&pg.url(), Duration::from_secs(2)).expect("open");
    let mut batch = Batch::default();
    batch.insert(
        journeyc::daemon::store::outbox_key(1),
        journeyc::daemon::store::encode_chunk(&old[..3]),
    );
    batch.insert(
        journeyc::daemon::store::outbox_key(4),
        journeyc::daemon::store::encode_chunk(&old[3..]),
    );
    batch.insert(journeyc::daemon::store::cursor_key(&sink), &2u64.to_be_bytes()[..]);
    batch.insert(journeyc::daemon::store::META_SEQ, &5u64.to_be_bytes()[..]);
    let letter = serde_json::json!({
        "sink": "webhook:http://127.0.0.1:9/", "seq": 7, "id": "old-c-m1", "reason": "refused",
        "attempts": 1, "error": "HTTP 400", "at": "2026-01-01T00:00:00.000Z",
        "record": serde_json::from_str::<serde_json::Value>(&send_line("old-c", "m1")).expect("json"),
    });
    batch.insert(
        journeyc::daemon::store::dead_key("webhook:http://127.0.0.1:9/", 7),
        letter.to_string().into_bytes(),
    );
    node.apply(None, batch).expect("the old records commit");
    node.release().expect("release");
    drop(node);
    assert!(rows(pg, b'o').iter().all(|(row, _, _)| *row == -1));
    // Records 1 to 3 are in the file; the cursor says 2 (a crash came
    // between the append of 3 and the cursor's write).
    let file: String = old[..3]
        .iter()
        .map(|(seq, line)| format!("{}\n", journeyc::daemon::sinks::with_seq(line, *seq)))
        .collect();
    std::fs::create_dir_all(env.data()).expect("mkdir");
    std::fs::write(env.sends(), file).expect("write the sink file");

    let daemon = env.start(&[]);
    eventually("the old record after the file's", || {
        sends(&env.data()).iter().any(|l| l["seq"] == 4).then_some(())
    });
    let customers: Vec<String> = (0..10).map(|i| format!("x{i}")).collect();
    let at = chrono::Utc::now().to_rfc3339();
    assert_eq!(daemon.post("/v1/batch", &bought_batch(&customers, &at)).status, 200);
    let dead = daemon.get("/v1/outbox/dead").json();
    assert_eq!(dead["dead_letters"][0]["seq"], 7, "{dead}");
    let acknowledged: BTreeSet<String> = customers.iter().cloned().collect();
    every_send_once(&[env.data()], &acknowledged, vec![daemon]);
    let lines = sink_lines(&env.sends());
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs[..4], [1, 2, 3, 4], "each old record once, in order");
    assert!(seqs[4..]
        .iter()
        .all(|seq| journeyc::daemon::kv::pg::seq_partition(*seq).is_some()));
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(rows(pg, b'o').is_empty(), "the old chunks went once delivered");
    let legacy: Vec<(String, u64)> = (cursor_rows(pg).into_iter())
        .filter(|(row, _, _, _)| *row == -1)
        .map(|(_, name, _, seq)| (name, seq))
        .collect();
    assert_eq!(legacy, vec![(sink, 4)], "the old cursor ends at the old records' last");
    assert_eq!(
        pg.psql("SELECT encode(value, 'hex') FROM journeyc_kv WHERE key = 'mseq'::bytea")
            .trim(),
        "0000000000000005",
        "mseq is not written any more"
    );
}

/// The partitions each of `nodes` holds, as the database has them.
fn holders(server: &super::pg::Postgres) -> BTreeMap<String, usize> {
    server
        .psql(
            "SELECT owner || ' ' || count(*) FROM journeyc_leases \
             WHERE partition >= 0 AND expires_at >= now() GROUP BY owner ORDER BY owner",
        )
        .lines()
        .filter_map(|line| line.trim().rsplit_once(' '))
        .map(|(owner, count)| (owner.to_string(), count.parse().expect("a count")))
        .collect()
}

#[test]
fn spread_nodes_take_fair_shares_and_the_rest_take_over_a_leaving_one() {
    if skip() {
        return;
    }
    let server = super::pg::Postgres::start("journeyc");
    let lease = Duration::from_secs(2);
    let first = Pg::open_as(&server.url(), lease, true).expect("open");
    // Alone, the first node holds every partition and the store's lease.
    assert_eq!(first.lease(), LeaseState::Held(1));
    assert_eq!(first.owned().len(), 256);
    let second = Pg::open_as(&server.url(), lease, true).expect("open a second node");
    assert_eq!(second.lease(), LeaseState::Standby);
    // The first gives half up at its next tick, the second claims it.
    eventually("two halves", || {
        (first.owned().len() == 128 && second.owned().len() == 128).then_some(())
    });
    let third = Pg::open_as(&server.url(), lease, true).expect("open a third node");
    eventually("three shares of at most ceil(256 / 3) = 86", || {
        let counts = [first.owned().len(), second.owned().len(), third.owned().len()];
        (counts.iter().sum::<usize>() == 256 && counts.iter().all(|c| *c <= 86 && *c >= 84)).then_some(counts)
    });
    // No partition is held twice, in memory or in the database.
    let mut all: Vec<i32> = [&first, &second, &third]
        .iter()
        .flat_map(|node| node.owned().into_keys())
        .collect();
    all.sort();
    assert_eq!(all, (0..256).collect::<Vec<_>>());
    let counts = holders(&server);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 256, "{counts:?}");
    // Each writes its own partitions and is refused the others'.
    let customer_in = |node: &Pg| {
        let partition = *node.owned().keys().next().expect("a partition");
        (0..)
            .map(|i| format!("c{i}"))
            .find(|key| partition_of(key.as_bytes(), 256) == partition)
            .expect("a customer of the partition")
    };
    let write = |key: &str| {
        let mut batch = Batch::default();
        batch.insert(key.as_bytes(), &b"1"[..]);
        batch
    };
    let (a, b) = (customer_in(&first), customer_in(&second));
    second.apply(None, write(&b)).expect("a node writes its partition");
    let refused = second.apply(None, write(&a)).expect_err("not its partition");
    assert!(refused.to_string().contains("is not owned by this node"), "{refused}");
    // Only the store's holder writes what names no customer.
    first.apply(None, write("mnote")).expect("the store's holder");
    assert!(second.apply(None, write("mnote")).is_err());

    // The first node stops: its partitions and the store's lease go to the
    // other two, in halves of 128.
    first.release().expect("release");
    drop(first);
    eventually("two halves again", || {
        (second.owned().len() == 128 && third.owned().len() == 128).then_some(())
    });
    eventually("the store's lease taken over", || {
        [second.lease(), third.lease()]
            .iter()
            .any(|state| matches!(state, LeaseState::Held(2)))
            .then_some(())
    });
    // A node that stops last leaves every partition to the one left (a
    // node killed -9 leaves its rows to expire: the three-daemon test).
    third.release().expect("release");
    drop(third);
    eventually("the last node holds every partition", || {
        (second.owned().len() == 256).then_some(())
    });
    assert_eq!(
        server
            .psql("SELECT count(*) FROM journeyc_nodes WHERE expires_at >= now()")
            .trim(),
        "1"
    );
}

/// The inbox holds two records, both of partition `p`: a call queued
/// behind an earlier one of its customer (`what` says which).
fn assert_queued_behind(pg: &super::pg::Postgres, p: i32, what: &str) {
    let queued = rows(pg, b'i');
    assert_eq!(queued.len(), 2, "{what}");
    assert!(queued.iter().all(|(partition, _, _)| *partition == p), "{queued:?}");
}

/// An `identify` of `user` with `anonymous` (of partition `q`, taken over
/// by another node) setting `plan` free, acked by `standby` into the
/// user's partition's inbox: the owner's drain of it is refused (its merge
/// writes q too), so it waits there.
fn identify_held_up_in_the_inbox(pg: &super::pg::Postgres, standby: &Daemon, user: &str, anonymous: &str, q: i32) {
    take_over(pg, q);
    let first = format!(
        r#"{{"type":"identify","userId":"{user}","anonymousId":"{anonymous}","traits":{{"plan":"free"}},"messageId":"first"}}"#
    );
    assert_eq!(standby.post("/v1/identify", &first).status, 200);
    assert_eq!(rows(pg, b'i').len(), 1);
}

/// Partition `q` claimed back by the owner: once every inbox record is
/// applied (in the order they were acked), `user`'s stored record.
fn claim_back_and_read(pg: &super::pg::Postgres, owner: &Daemon, q: i32, user: &str) -> serde_json::Value {
    expire_lease(pg, q);
    eventually("both applied", || rows(pg, b'i').is_empty().then_some(()));
    let stored = owner.get(&format!("/v1/customers/{user}"));
    assert_eq!(stored.status, 200, "{}", stored.body);
    stored.json()
}

/// A `signed_up` track call of `customer`, refused while the workspace
/// does not declare the event.
fn signed_up(customer: &str) -> String {
    format!(r#"{{"type":"track","userId":"{customer}","event":"signed_up","properties":{{"n":1}},"messageId":"late"}}"#)
}

/// Declares `signed_up` in `env`'s workspace and reloads it at `owner`.
fn declare_signed_up(env: &Env, owner: &Daemon) {
    std::fs::write(
        env.workspace().join("test.journey"),
        format!("{WORKSPACE}\nevent signed_up {{ n: int }}\n"),
    )
    .expect("write the workspace");
    assert_eq!(owner.post("/v1/reload", "").status, 200);
}

/// Lets partition `partition`'s lease expire, as a node that stopped
/// renewing it would: the next node to look claims it.
fn expire_lease(pg: &super::pg::Postgres, partition: i32) {
    pg.psql(&format!(
        "UPDATE journeyc_leases SET expires_at = now() - interval '1 second' WHERE partition = {partition}"
    ));
}

/// A `--spread` daemon on `env`'s database with `data` as its data
/// directory.
fn start_spread(env: &Env, data: &Path) -> Daemon {
    env.start_spread_with_env(data, &[], &[])
}

/// How many partitions each node holds now, by the lease table.
fn shares(pg: &super::pg::Postgres) -> Vec<usize> {
    holders(pg).into_values().collect()
}

#[test]
fn three_spread_nodes_share_the_partitions_and_a_killed_one_loses_no_acked_event() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let datas: Vec<PathBuf> = ["data", "second", "third"]
        .iter()
        .map(|name| env.root.path().join(name))
        .collect();
    let first = start_spread(&env, &datas[0]);
    first.wait_until_owner();
    let second = start_spread(&env, &datas[1]);
    let third = start_spread(&env, &datas[2]);
    // Each node applies a third of the partitions (ceil(256 / 3) = 86 at
    // most), the first one also what names no customer.
    eventually("three shares", || {
        let shares = shares(pg);
        (shares.len() == 3 && shares.iter().all(|share| (84..=86).contains(share))).then_some(())
    });
    let addrs = Arc::new(Mutex::new(vec![
        first.addr.clone(),
        second.addr.clone(),
        third.addr.clone(),
    ]));

    // Clients post to every node in turn, moving on at a refusal or a cut
    // connection (the killed node).
    let posters = Posters::start(&addrs, "s", true);
    let root = env.root.path().to_path_buf();
    let acked_more_than = |n: usize| posters.acked_more_than(n, &root);
    acked_more_than(60);
    // Every node applies and delivers: each one's sink has sends.
    eventually("sends from every node", || {
        datas.iter().all(|data| !sends(data).is_empty()).then_some(())
    });

    // kill -9 a node holding no store lease, with timers pending (each
    // event's is due 2 s on) and batches in flight; the other two take its
    // partitions over once its leases expire.
    second.kill();
    let killed_at = posters.count();
    eventually("two halves", || {
        let shares = shares(pg);
        (shares.len() == 2 && shares.iter().all(|share| *share == 128)).then_some(())
    });
    acked_more_than(killed_at + 60);
    // The killed node comes back and takes its third again.
    let restarted = start_spread(&env, &datas[1]);
    addrs.lock().expect("lock")[1] = restarted.addr.clone();
    eventually("three shares again", || {
        let shares = shares(pg);
        (shares.len() == 3 && shares.iter().all(|share| (84..=86).contains(share))).then_some(())
    });
    let restarted_at = posters.count();
    acked_more_than(restarted_at + 60);

    // Every acked event's send and its timer's send, exactly once, across
    // the three nodes' sinks.
    let acknowledged = posters.finish();
    every_send_once(&datas, &acknowledged, vec![first, restarted, third]);
}

/// Two ids whose customers fall in two halves of 256 partitions: the first
/// in 0..128 (which the first of two `--spread` nodes keeps: the surplus
/// goes highest first), the second in 128..256 (which the second takes).
fn ids_in_two_halves() -> (String, String) {
    let p = |id: &str| partition_of(&journeyc::daemon::store::customer_key(id), 256);
    let find = |prefix: &str, low: bool| {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|id| (p(id) < 128) == low)
            .expect("an id")
    };
    (find("anon", true), find("user", false))
}

#[test]
fn a_call_naming_an_alias_goes_to_the_partition_of_its_customer_on_any_spread_node() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let (anonymous, user) = ids_in_two_halves();
    let (first_data, second_data) = (env.root.path().join("data"), env.root.path().join("second"));
    // Alone, the first node holds both partitions: the merge of the
    // anonymous id into the user commits there.
    let first = start_spread(&env, &first_data);
    first.wait_until_owner();
    let merge = format!(r#"{{"type":"identify","userId":"{user}","anonymousId":"{anonymous}","traits":{{}}}}"#);
    let merged = first.post("/v1/identify", &merge);
    assert_eq!(merged.status, 200, "{}", merged.body);
    // A second node takes the upper half: the user's partition, not the
    // anonymous id's.
    let second = start_spread(&env, &second_data);
    eventually("two halves", || (shares(pg) == vec![128, 128]).then_some(()));
    let holder = |id: &str| {
        let partition = partition_of(&journeyc::daemon::store::customer_key(id), 256);
        pg.psql(&format!(
            "SELECT owner FROM journeyc_leases WHERE partition = {partition}"
        ))
        .trim()
        .to_string()
    };
    assert_ne!(holder(&anonymous), holder(&user));
    // Calls naming the anonymous id, posted to the store's owner (which
    // holds the anonymous id's partition) and to the other node: both are
    // acked, and applied to the user by the user's partition's holder.
    let track = |n: i64| {
        format!(
            r#"{{"type":"track","anonymousId":"{anonymous}","event":"ping","properties":{{"n":{n}}},"messageId":"alias-{n}"}}"#
        )
    };
    for (n, node) in [&first, &second].into_iter().enumerate() {
        let acked = node.post("/v1/track", &track(n as i64));
        assert_eq!(acked.status, 200, "{}", acked.body);
    }
    eventually("the user's two hellos, sent by the user's partition's holder", || {
        let hellos = |data: &Path| {
            sends(data)
                .iter()
                .filter(|l| l["customer"] == user.as_str() && l["message"] == "hello")
                .count()
        };
        (hellos(&second_data) == 2).then_some(())
    });
    assert!(
        sends(&first_data).iter().all(|l| l["customer"] != user.as_str()),
        "the first node holds no partition of the user"
    );
    let customer = first.get(&format!("/v1/customers/{user}"));
    assert_eq!(customer.status, 200, "{}", customer.body);
    assert_eq!(second.terminate(), Some(0));
    assert_eq!(first.terminate(), Some(0));
}

#[test]
fn a_spread_owners_calls_of_a_partition_taken_after_their_routing_go_to_its_inbox_acked() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let data = env.root.path().join("data");
    let daemon = start_spread(&env, &data);
    daemon.wait_until_owner();
    let ((taken, p), (other, _)) = two_partitions();
    // Another node takes partition p over. The daemon learns it at its
    // next renewal (a second at most) or, before that, from the fence of
    // the first commit naming p, which is refused inside its transaction
    // after the call was routed to the commit thread as one of a held
    // partition.
    take_over(pg, p);
    let acked = daemon.post("/v1/track", &ping(&taken, "m0", 0));
    assert_eq!(acked.status, 200, "{}", acked.body);
    // Concurrent requests, some sharing group commits with calls of p:
    // every one is acked, p's into its inbox.
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (addr, taken, other) = (daemon.addr.clone(), taken.clone(), other.clone());
            std::thread::spawn(move || {
                let auth = format!("Bearer {TOKEN}");
                (1..6)
                    .flat_map(|n| {
                        [&taken, &other].map(|customer| {
                            let body = ping(customer, &format!("{customer}-k{client}-{n}"), n);
                            let response =
                                request(&addr, "POST", "/v1/track", Some(&body), Some(&auth)).expect("request");
                            (customer.clone(), response.status, response.body)
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for client in clients {
        for (customer, status, body) in client.join().expect("client") {
            assert_eq!(status, 200, "{customer}: {body}");
        }
    }
    // p's calls wait in its inbox, none applied: the node does not hold it.
    let waiting = || {
        pg.psql(&format!(
            "SELECT count(*) FROM journeyc_kv WHERE partition = {p} AND get_byte(key, 0) = 105"
        ))
        .trim()
        .parse::<usize>()
        .expect("a count")
    };
    assert!(waiting() >= 1, "p's calls are in its inbox");
    assert_eq!(daemon.get(&format!("/v1/customers/{taken}")).status, 404);
    // The other node's lease expires: the daemon claims p back and applies
    // every call acked for it, once.
    expire_lease(pg, p);
    let hellos = |customer: &str| {
        sends(&data)
            .iter()
            .filter(|l| l["customer"] == customer && l["message"] == "hello")
            .count()
    };
    eventually("every acked call of both customers applied", || {
        (hellos(&taken) == 21 && hellos(&other) == 20).then_some(())
    });
    assert_eq!(waiting(), 0);
    assert_eq!(daemon.terminate(), Some(0));
    assert_eq!((hellos(&taken), hellos(&other)), (21, 20));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outbox-number race: a group draws outbox numbers of partition p
/// (`Pg::outbox_seq`), p is taken over by another node, which writes a
/// record of p under a number of its own block (drawn after its claim, so
/// above the group's) that a sink then reads; that lease expires and this
/// node claims p back; only then does the group commit. Its numbers are
/// below the sink's cursor of p: committed, they would never be
/// delivered. The group's batch is fenced at the epochs held when the
/// group began (`Kv::apply_batch_held`), so it is refused; drawn again
/// under the new claim, the record is numbered above the other node's and
/// delivered.
#[test]
fn outbox_numbers_drawn_before_a_partition_was_lost_and_claimed_back_are_refused() {
    if skip() {
        return;
    }
    let server = super::pg::Postgres::start("journeyc");
    let pg = Pg::open(&server.url(), Duration::from_secs(2)).expect("open");
    let store = journeyc::daemon::store::Store::on(journeyc::daemon::kv::Kv::Postgres(pg)).expect("store");
    let journeyc::daemon::kv::Kv::Postgres(pg) = &store.db else {
        unreachable!("opened on PostgreSQL")
    };
    let ((customer, p), _) = two_partitions();
    let chunk_of = |seq: u64, line: &str| {
        let mut batch = Batch::default();
        batch.insert(
            journeyc::daemon::store::outbox_key(seq),
            journeyc::daemon::store::encode_seq_chunk(&[(seq, line)]),
        );
        batch
    };

    // The group begins: the held set, then a number of p drawn.
    let held = pg.owned();
    assert_eq!(held.get(&p), Some(&1));
    let early = pg.outbox_seq(p).expect("a number");
    // p is taken over; this node learns it at its next renewal.
    take_over(&server, p);
    eventually("p dropped from the held set", || {
        (!pg.owned().contains_key(&p)).then_some(())
    });
    // The other node writes a record of p under a block of its own.
    let drawn: u64 = server
        .psql("SELECT nextval('journeyc_outbox_seq')")
        .trim()
        .parse()
        .expect("a number");
    let theirs = journeyc::daemon::kv::pg::partitioned_chunk(drawn, p);
    assert!(theirs > early, "{theirs} above {early}");
    let their_line = send_line(&customer, "theirs");
    server.psql(&format!(
        "INSERT INTO journeyc_kv (partition, key, value) VALUES ({p}, '\\x{}', '\\x{}')",
        hex(&journeyc::daemon::store::outbox_key(theirs)),
        hex(&journeyc::daemon::store::encode_seq_chunk(&[(theirs, &their_line)])),
    ));
    // Its lease expires; this node claims p back, at epoch 3.
    expire_lease(&server, p);
    eventually("p claimed back", || (pg.owned().get(&p) == Some(&3)).then_some(()));
    // A sink reads the other node's record: its cursor of p is past `early`.
    let round = store
        .outbox_after(&journeyc::daemon::store::Cursors::default(), 0, 100)
        .expect("a round");
    assert_eq!(
        round.items.iter().map(|item| item.seq).collect::<Vec<_>>(),
        vec![theirs]
    );
    let cursors = round.next;

    // The group commits now, at the epochs it began with: refused.
    let refused = store
        .db
        .apply_batch_held(chunk_of(early, &send_line(&customer, "mine")), Some(&held))
        .expect_err("a group that began before p was lost commits nothing to it");
    assert!(
        matches!(
            refused,
            journeyc::daemon::store::StoreError::PartitionNotOwned { partition, .. } if partition == p
        ),
        "{refused}"
    );
    assert_eq!(pg.owned().get(&p), Some(&3), "the newer claim stays held");
    assert!(store.outbox_after(&cursors, 0, 100).expect("a round").items.is_empty());
    // Committed again (as a refused group's jobs are), it draws anew:
    // above the other node's number, so the sink gets it.
    let held = pg.owned();
    let again = pg.outbox_seq(p).expect("a number");
    assert!(again > theirs, "{again} above {theirs}");
    store
        .db
        .apply_batch_held(chunk_of(again, &send_line(&customer, "mine")), Some(&held))
        .expect("committed under the new claim");
    let round = store.outbox_after(&cursors, 0, 100).expect("a round");
    assert_eq!(round.items.iter().map(|item| item.seq).collect::<Vec<_>>(), vec![again]);
}

/// The journeys of the sends in `data`'s sink for `customer`, in the
/// sink's order (one node: the order their calls were applied in).
fn journeys_sent(data: &Path, customer: &str) -> Vec<String> {
    sends(data)
        .iter()
        .filter(|l| l["customer"] == customer && l["message"] == "hello")
        .map(|l| l["journey"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// One customer's calls in the order they were acked, the first through
/// the inbox, the second at the owner: the first (a `ping` of the user
/// with an anonymous id, acked by a standby into the user's partition's
/// inbox) waits there, since its merge also writes the anonymous id's
/// partition, held by another node; the second (a `bought` of the user
/// alone) is posted to the owner, which holds the user's partition. It is
/// queued behind the first (`http.rs`, `elsewhere`) and applied after it
/// once the other partition is claimed: `pinger` sends before `delayed`.
/// Committed at once (the owner's look at the inbox taken out), `delayed`
/// sends first.
#[test]
fn a_call_at_the_owner_waits_behind_its_customers_call_held_up_in_the_inbox() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = node(&env, "standby");
    let ((anonymous, q), (user, p)) = two_partitions();
    take_over(pg, q);
    let first = format!(
        r#"{{"type":"track","userId":"{user}","anonymousId":"{anonymous}","event":"ping","properties":{{"n":1}},"messageId":"first"}}"#
    );
    assert_eq!(standby.post("/v1/track", &first).status, 200);
    // The owner tries the record: refused (q), it waits in p's inbox.
    assert_eq!(rows(pg, b'i').len(), 1);
    assert_eq!(owner.get(&format!("/v1/customers/{user}")).status, 404);
    let second = owner.post("/v1/track", &bought(&user));
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(
        owner.get(&format!("/v1/customers/{user}")).status,
        404,
        "applied before the first"
    );
    assert_queued_behind(pg, p, "the second queued behind the first");

    // q claimed back: both applied, in the order they were acked.
    expire_lease(pg, q);
    eventually("both applied", || {
        (journeys_sent(&env.data(), &user).len() == 2).then_some(())
    });
    assert!(rows(pg, b'i').is_empty());
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(standby.terminate(), Some(0));
    assert_eq!(journeys_sent(&env.data(), &user), ["pinger", "delayed"]);
}

/// Right after a takeover: a customer's call acked by a standby into the
/// inbox of its partition while another node holds it, then that lease
/// expires and the owner claims the partition; a second call of the
/// customer posted to the owner as soon as the lease row names it is
/// applied after the first, whether or not the owner's drain (which looks
/// at least every second) took the first already. Committed at once (the
/// owner's look at the inbox taken out) it was applied first, 3 runs of 3.
#[test]
fn a_call_at_the_owner_right_after_it_claimed_a_partition_follows_the_calls_in_its_inbox() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = node(&env, "standby");
    let ((user, p), _) = two_partitions();
    let node_name = pg
        .psql("SELECT owner FROM journeyc_leases WHERE partition = -1")
        .trim()
        .to_string();
    take_over(pg, p);
    assert_eq!(standby.post("/v1/track", &ping(&user, "first", 1)).status, 200);
    assert_eq!(rows(pg, b'i').len(), 1);
    expire_lease(pg, p);
    eventually("p claimed by the owner", || {
        (pg.psql(&format!(
            "SELECT owner FROM journeyc_leases WHERE partition = {p} AND expires_at > now()"
        ))
        .trim()
            == node_name)
            .then_some(())
    });
    let second = owner.post("/v1/track", &bought(&user));
    assert_eq!(second.status, 200, "{}", second.body);
    eventually("both applied", || {
        (journeys_sent(&env.data(), &user).len() == 2).then_some(())
    });
    assert!(rows(pg, b'i').is_empty());
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(standby.terminate(), Some(0));
    assert_eq!(journeys_sent(&env.data(), &user), ["pinger", "delayed"]);
}

/// The owner's `POST /v1/import` is queued as its intake is: a customer's
/// earlier call (an `identify` of the user with an anonymous id, setting
/// `plan` to free, acked by a standby into the user's partition's inbox)
/// waits there, its merge also writing the anonymous id's partition held
/// by another node; an import row of the user (`plan` pro) posted to the
/// owner is acked and queued behind it, not applied, and once that
/// partition is claimed back the row is applied last: `plan` is pro.
/// Committed at once (the owner's look at the inbox taken out), the row
/// was applied before the `identify`, which then set `plan` back to free.
#[test]
fn an_import_at_the_owner_waits_behind_its_customers_call_held_up_in_the_inbox() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = node(&env, "standby");
    let ((anonymous, q), (user, p)) = two_partitions();
    identify_held_up_in_the_inbox(pg, &standby, &user, &anonymous, q);
    let imported = owner.post("/v1/import", &format!("id,plan\n{user},pro\n"));
    assert_eq!(imported.status, 200, "{}", imported.body);
    assert_eq!(imported.json()["accepted"], 1, "{}", imported.body);
    assert_eq!(
        owner.get(&format!("/v1/customers/{user}")).status,
        404,
        "applied before the first"
    );
    assert_queued_behind(pg, p, "the import queued behind the first");

    let stored = claim_back_and_read(pg, &owner, q, &user);
    assert_eq!(stored["profile"]["plan"], "pro", "{stored}");
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(standby.terminate(), Some(0));
}

/// The owner's one-click unsubscribe is queued as its intake is
/// (docs/scale-out.md, "The order of one customer's calls": a
/// subscription is the last one applied, so an unsubscribe applied before
/// an opt-in acked earlier would be undone by it). The user has a send
/// (its link); an `identify` of the user with an anonymous id opting in to
/// email, acked by a standby, waits in the user's partition's inbox (its
/// merge also writes the anonymous id's partition, held by another node);
/// the user's link posted to the owner is answered with the page, and the
/// `Unsubscribed` call is queued behind the opt-in, not applied; once that
/// partition is claimed back both are applied in the order they were
/// acked and the user is unsubscribed. Committed at once (the handler
/// before this commit), the user was unsubscribed at the POST, then
/// subscribed again by the opt-in.
#[test]
fn a_one_click_unsubscribe_at_the_owner_waits_behind_its_customers_opt_in_held_up_in_the_inbox() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = node(&env, "standby");
    let ((anonymous, q), (user, p)) = two_partitions();
    assert_eq!(owner.post("/v1/track", &ping(&user, "zero", 0)).status, 200);
    let url = eventually("the user's send with its link", || {
        sends(&env.data())
            .into_iter()
            .find(|l| l["customer"] == user.as_str())
            .and_then(|l| l["unsubscribe_url"].as_str().map(str::to_string))
    });
    let path = url[url.find("/u/").expect("/u/")..].to_string();
    let status = || owner.get(&format!("/v1/customers/{user}")).json()["subscriptions"]["email"]["status"].clone();
    assert_eq!(status(), "subscribed");

    take_over(pg, q);
    let opt_in = format!(
        r#"{{"type":"identify","userId":"{user}","anonymousId":"{anonymous}","traits":{{"email_subscribe":"opted_in"}},"messageId":"opt-in"}}"#
    );
    assert_eq!(standby.post("/v1/identify", &opt_in).status, 200);
    // The owner tries the record: refused (q), it waits in p's inbox.
    assert_eq!(rows(pg, b'i').len(), 1);
    let clicked = owner.request_with("POST", &path, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(clicked.status, 200, "{}", clicked.body);
    assert!(clicked.body.contains("You are unsubscribed"), "{}", clicked.body);
    assert_eq!(status(), "subscribed", "applied before the opt-in");
    assert_queued_behind(pg, p, "the unsubscribe queued behind the opt-in");

    // q claimed back: both applied, in the order they were acked.
    expire_lease(pg, q);
    eventually("both applied", || rows(pg, b'i').is_empty().then_some(()));
    assert_eq!(status(), "unsubscribed");
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(standby.terminate(), Some(0));
}

/// A replay of refused calls at the owner is queued as its intake is
/// (docs/scale-out.md, "The order of one customer's calls"): the call was
/// refused (its event unknown), an `identify` of the same user acked by a
/// standby waits in the user's partition's inbox (its merge also writes a
/// partition held by another node), the event declared by a reload; the
/// replay at the owner ingests the call behind the `identify`, not at
/// once, and both are applied once that partition is claimed back.
/// Ingested at once (the replay before this commit), the call was applied
/// ahead of the `identify` acked before the replay was asked for.
#[test]
fn a_replay_at_the_owner_waits_behind_its_customers_call_held_up_in_the_inbox() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = node(&env, "standby");
    let ((anonymous, q), (user, p)) = two_partitions();
    assert_eq!(owner.post("/v1/track", &signed_up(&user)).status, 422);
    identify_held_up_in_the_inbox(pg, &standby, &user, &anonymous, q);
    declare_signed_up(&env, &owner);
    let replayed = owner.post("/v1/rejected/replay", "");
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(replayed.json()["replayed"], 1, "{}", replayed.body);
    assert_eq!(
        owner.get(&format!("/v1/customers/{user}")).status,
        404,
        "applied before the first"
    );
    assert_queued_behind(pg, p, "the replay queued behind the first");

    let stored = claim_back_and_read(pg, &owner, q, &user);
    assert_eq!(stored["profile"]["plan"], "free", "{stored}");
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(standby.terminate(), Some(0));
}

/// An interpreter for the commit thread alone: every call it applies
/// makes one send record (no journey needed); the first one it applies
/// tells `started` and waits for `go`, so a test can lose and claim back
/// a partition while the group runs. It counts what it applied.
struct HeldOnce {
    started: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    go: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    applied: std::sync::atomic::AtomicUsize,
}

impl journeyc::daemon::commit::Interpreter for HeldOnce {
    fn apply(
        &self,
        state: &mut journeyc::runtime::CustomerState,
        input: &journeyc::runtime::input::Input,
    ) -> Result<journeyc::runtime::Effects, journeyc::runtime::ApplyError> {
        let n = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(started) = self.started.lock().expect("lock").take() {
            started.send(()).expect("the test waits");
            let go = self.go.lock().expect("lock").take().expect("go");
            go.recv().expect("the test lets go");
        }
        let mut send =
            journeyc::runtime::TraceRecord::new(input.at(), &state.id, "j", journeyc::runtime::trace::Kind::Send);
        send.id = Some(format!("{}-{n}", state.id));
        send.message = Some("m".into());
        let mut effects = journeyc::runtime::Effects::default();
        effects.records.push(send);
        Ok(effects)
    }
}

/// A commit thread alone on `store` (no drain, no timers: what it
/// commits is what the test sends it), running `interpreter` over an
/// empty bundle; it ends once the committer is dropped.
fn commit_thread(
    store: &journeyc::daemon::store::Store,
    interpreter: Arc<HeldOnce>,
) -> (journeyc::daemon::commit::Committer, std::thread::JoinHandle<()>) {
    use journeyc::daemon::commit::{CommitThread, Committer, Published, Runtime};
    let bundle = journeyc::compile::bytecode::Bundle {
        format_version: journeyc::compile::bytecode::FORMAT_VERSION,
        names: vec![],
        schema: Default::default(),
        segments: vec![],
        messages: vec![],
        settings: Default::default(),
        journeys: vec![],
        history_window_seconds: 0,
    };
    let runtime = Arc::new(std::sync::RwLock::new(Arc::new(Runtime {
        bundle: Arc::new(bundle),
        bundle_key: "k".into(),
        interpreter,
        retained: vec![],
    })));
    let published = Published {
        committed_seq: Arc::new(tokio::sync::watch::channel(0).0),
        stats: Arc::default(),
        timers_changed: Arc::default(),
        metrics: Arc::default(),
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(journeyc::daemon::commit::JOB_CHANNEL_CAPACITY);
    let thread = CommitThread::new(
        store.clone(),
        runtime,
        published,
        1,
        store.next_timer_chunk().expect("chunk number"),
    );
    (Committer { sender }, std::thread::spawn(move || thread.run(receiver)))
}

/// A `track` call of `customer`, validated.
fn track(customer: &str) -> journeyc::runtime::input::Call {
    journeyc::runtime::input::Call {
        customer: customer.to_string(),
        input: journeyc::runtime::input::Input::Track {
            event: "e".into(),
            properties: Default::default(),
            at: 10_000,
            message_id: None,
        },
        merge: None,
        fill: Default::default(),
        group: None,
    }
}

/// The single-job retry after a claim-back, through the commit thread: a
/// job of partition p begins (its group takes the epochs held: p at 1)
/// and, while its input is applied, p is taken over by another node,
/// which draws outbox numbers of its own, then its lease expires and this
/// node claims p back (epoch 3). The group's batch, fenced at epoch 1, is
/// refused (`PartitionNotOwned`); since p was claimed after the group
/// began, the job is committed once more under the set held now: applied
/// again, answered `Ok`, one send record in p's outbox, numbered from a
/// block drawn after the claim (above the other node's number), so a sink
/// gets it. Without the retry (`commit.rs`, `claimed_since_group_began`)
/// the job is answered with the refusal.
#[test]
fn a_job_refused_after_its_partition_was_lost_and_claimed_back_is_committed_again_with_new_numbers() {
    if skip() {
        return;
    }
    let server = super::pg::Postgres::start("journeyc");
    let pg = Pg::open(&server.url(), Duration::from_secs(2)).expect("open");
    let store = journeyc::daemon::store::Store::on(journeyc::daemon::kv::Kv::Postgres(pg)).expect("store");
    let journeyc::daemon::kv::Kv::Postgres(pg) = &store.db else {
        unreachable!("opened on PostgreSQL")
    };
    let ((customer, p), _) = two_partitions();
    let (started, running) = std::sync::mpsc::channel();
    let (go, held) = std::sync::mpsc::channel();
    let interpreter = Arc::new(HeldOnce {
        started: Mutex::new(Some(started)),
        go: Mutex::new(Some(held)),
        applied: Default::default(),
    });
    let (committer, committing) = commit_thread(&store, interpreter.clone());
    let call = track(&customer);
    let answer = std::thread::spawn(move || {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio.block_on(committer.ingest(vec![call]))
    });

    // The group began (p held at epoch 1) and applies the input.
    running.recv().expect("the job runs");
    take_over(&server, p);
    eventually("p dropped from the held set", || {
        (!pg.owned().contains_key(&p)).then_some(())
    });
    let drawn: u64 = server
        .psql("SELECT nextval('journeyc_outbox_seq')")
        .trim()
        .parse()
        .expect("a number");
    let theirs = journeyc::daemon::kv::pg::partitioned_chunk(drawn, p);
    expire_lease(&server, p);
    eventually("p claimed back", || (pg.owned().get(&p) == Some(&3)).then_some(()));
    go.send(()).expect("the job waits");

    let answered = answer.join().expect("the request");
    assert!(answered.is_ok(), "{answered:?}");
    assert_eq!(
        interpreter.applied.load(Ordering::SeqCst),
        2,
        "applied again after the refusal"
    );
    assert!(store.customer(&customer).expect("read").is_some());
    let round = store
        .outbox_after(&journeyc::daemon::store::Cursors::default(), 0, 100)
        .expect("a round");
    let seqs: Vec<(i32, u64)> = round.items.iter().map(|item| (item.partition, item.seq)).collect();
    assert_eq!(seqs.len(), 1, "{seqs:?}");
    assert_eq!(seqs[0].0, p);
    assert!(seqs[0].1 > theirs, "{seqs:?} above {theirs}");
    assert!(
        round.items[0].line.contains(&format!("\"id\":\"{customer}-2\"")),
        "{}",
        round.items[0].line
    );
    // The committer was dropped with the request's thread: the commit
    // thread ends.
    committing.join().expect("the commit thread");
}

/// Two jobs of the node's own intake in one group commit, one of which
/// must wait: a first job (customer `a`) holds the commit thread inside
/// its input while jobs of `b` (partition p, whose inbox holds an earlier
/// record of `b`, written as another node writes one) and of `c` (another
/// partition, inbox empty) are sent, so both wait in the channel and make
/// the next group together. Its transaction's look finds p's record:
/// nothing of that try is written, `b`'s call goes to p's inbox (a record
/// sorting after the earlier one, holding the call as sent) and `c`'s is
/// applied, in one transaction; both are answered `Ok`. Without the look
/// (`commit.rs`, `apply_behind_inbox`) `b` is applied at once, ahead of
/// its earlier call.
#[test]
fn a_group_with_a_job_behind_its_partitions_inbox_queues_it_and_applies_the_other() {
    if skip() {
        return;
    }
    let server = super::pg::Postgres::start("journeyc");
    let pg = Pg::open(&server.url(), Duration::from_secs(10)).expect("open");
    let store = journeyc::daemon::store::Store::on(journeyc::daemon::kv::Kv::Postgres(pg)).expect("store");
    let journeyc::daemon::kv::Kv::Postgres(pg) = &store.db else {
        unreachable!("opened on PostgreSQL")
    };
    let partition = |id: &str| partition_of(format!("c{id}").as_bytes(), 256);
    let ids: Vec<String> = (0..).map(|i| format!("q{i}")).take(64).collect();
    let a = ids[0].clone();
    let b = (ids.iter())
        .find(|id| partition(id) != partition(&a))
        .expect("b")
        .clone();
    let c = (ids.iter())
        .find(|id| ![partition(&a), partition(&b)].contains(&partition(id)))
        .expect("c")
        .clone();
    let p = partition(&b);
    let earlier = journeyc::daemon::inbox::key(
        journeyc::daemon::inbox::partitioned_number(store.db.generate_id().expect("an id"), p).expect("a number"),
    );
    pg.put_unfenced(&earlier, &journeyc::daemon::inbox::encode(&[track(&b)]))
        .expect("the earlier record");

    let (started, running) = std::sync::mpsc::channel();
    let (go, held) = std::sync::mpsc::channel();
    let interpreter = Arc::new(HeldOnce {
        started: Mutex::new(Some(started)),
        go: Mutex::new(Some(held)),
        applied: Default::default(),
    });
    let (committer, committing) = commit_thread(&store, interpreter.clone());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let send = |customer: &str| {
        let (committer, call) = (committer.clone(), track(customer));
        tokio.spawn(async move { committer.ingest(vec![call]).await })
    };
    let first = send(&a);
    running.recv().expect("the first job runs");
    let (queued, other) = (send(&b), send(&c));
    let capacity = journeyc::daemon::commit::JOB_CHANNEL_CAPACITY;
    eventually("both jobs waiting in the channel", || {
        (committer.sender.capacity() == capacity - 2).then_some(())
    });
    go.send(()).expect("the first job waits");
    for (who, answer) in [(&a, first), (&b, queued), (&c, other)] {
        let answer = tokio.block_on(answer).expect("the job's task");
        assert!(answer.is_ok(), "{who}: {answer:?}");
    }

    assert!(store.customer(&a).expect("read").is_some());
    assert!(store.customer(&c).expect("read").is_some(), "the other job applied");
    assert!(
        store.customer(&b).expect("read").is_none(),
        "applied ahead of its earlier call in the inbox"
    );
    let records = rows(&server, b'i');
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().all(|(partition, _, _)| *partition == p), "{records:?}");
    assert_eq!(records[0].1, earlier, "the earlier record sorts first");
    assert!(inbox_number(&records[1].1).0 > inbox_number(&earlier).0);
    assert_eq!(record_customers(&records[1].2), vec![b.to_string()]);
    // a once; b and c in the try the look refused; c again.
    assert_eq!(interpreter.applied.load(Ordering::SeqCst), 4);
    drop(committer);
    committing.join().expect("the commit thread");
}

/// With `--spread`, `POST /v1/customers/ID/retry` at the store's owner for
/// a customer of a partition another node holds is handed to that node,
/// which applies the customer and holds its fault, and is answered as that
/// node answers.
#[test]
fn a_retry_at_the_spread_owner_of_a_customer_another_node_holds_is_handed_to_that_node() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let (_, stuck) = ids_in_two_halves();
    let owner = start_spread(&env, &env.root.path().join("data"));
    owner.wait_until_owner();
    // The second node takes the upper half, the stuck customer's; its
    // first two inputs fail there, and it is parked at the first.
    let faults = format!("{stuck}:2");
    let holder = env.start_spread_with_env(
        &env.root.path().join("second"),
        &["--fault-retries", "0"],
        &[("JOURNEYC_INJECT_FAULTS", faults.as_str())],
    );
    eventually("two halves", || (shares(pg) == vec![128, 128]).then_some(()));
    assert_eq!(owner.post("/v1/track", &ping(&stuck, "stuck-1", 1)).status, 200);
    let customer = format!("/v1/customers/{stuck}");
    eventually("parked", || {
        (holder.get(&customer).json()["fault"]["state"] == "parked").then_some(())
    });
    // The first retry fails again, the second recovers: answered by the
    // holder, through the owner.
    for recovered in [false, true] {
        let retried = owner.post(&format!("{customer}/retry"), "");
        assert_eq!(retried.status, 200, "{}", retried.body);
        assert_eq!(retried.json()["customer"], stuck.as_str(), "{}", retried.body);
        assert_eq!(retried.json()["recovered"], recovered, "{}", retried.body);
    }
    assert_eq!(owner.get(&customer).json()["fault"], serde_json::Value::Null);
    let not_failing = owner.post(&format!("{customer}/retry"), "");
    assert_eq!(not_failing.status, 404, "{}", not_failing.body);
}

/// With `--spread`, a replay at the store's owner of a refused call of a
/// customer of a partition another node holds goes to that partition's
/// inbox, and its holder applies it. Given to the owner's own commit
/// thread (the replay before this), the fence refused it with a 500.
#[test]
fn a_replay_at_the_spread_owner_of_another_nodes_customer_goes_to_its_inbox() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let (_, theirs) = ids_in_two_halves();
    let owner = start_spread(&env, &env.root.path().join("data"));
    owner.wait_until_owner();
    let holder = start_spread(&env, &env.root.path().join("second"));
    eventually("two halves", || (shares(pg) == vec![128, 128]).then_some(()));
    assert_eq!(owner.post("/v1/track", &signed_up(&theirs)).status, 422);
    declare_signed_up(&env, &owner);
    let replayed = owner.post("/v1/rejected/replay", "");
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(replayed.json()["replayed"], 1, "{}", replayed.body);
    let customer = format!("/v1/customers/{theirs}");
    eventually("applied by the holder", || {
        (holder.get(&customer).status == 200).then_some(())
    });
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(holder.terminate(), Some(0));
}

/// A `--spread` applier migrates the enrollments of the partitions it
/// claims (the workspace has an `on update migrate` journey); with none to
/// move it writes nothing. Its empty batch was fenced at the store's lease,
/// which an applier does not hold, so the migration failed before every
/// group ("this node is a standby") and the applier never took in the
/// change of ownership.
#[test]
fn a_spread_applier_with_nothing_to_migrate_takes_its_partitions_in() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let (_, theirs) = ids_in_two_halves();
    let owner = start_spread(&env, &env.root.path().join("data"));
    owner.wait_until_owner();
    let second = env.root.path().join("second");
    let applier = start_spread(&env, &second);
    eventually("two halves", || (shares(pg) == vec![128, 128]).then_some(()));
    assert_eq!(owner.post("/v1/track", &ping(&theirs, "theirs-1", 1)).status, 200);
    eventually("applied by the applier", || {
        (applier.get(&format!("/v1/customers/{theirs}")).status == 200).then_some(())
    });
    let log = std::fs::read_to_string(second.join("daemon.log")).unwrap_or_default();
    assert!(!log.contains("migrating the partitions held failed"), "{log}");
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(applier.terminate(), Some(0));
}
