//! Any node of one PostgreSQL database serves reads, stats, `/ui`,
//! `DELETE /v1/customers/ID`, `POST /v1/reload` and refused calls
//! (`docs/scale-out.md`, "Any node"): on real servers and processes, the
//! standby's answers compared with the owner's.

use super::harness::*;
use std::path::{Path, PathBuf};

fn skip() -> bool {
    let skip = super::pg::skip_requested();
    if skip {
        eprintln!("JOURNEYC_SKIP_PG=1: PostgreSQL test skipped");
    }
    skip
}

/// A standby on `env`'s database with a workspace and data directory of
/// its own (`name/ws`, `name/data`), the workspace `source`.
fn standby_with(env: &Env, name: &str, source: &str) -> (Daemon, PathBuf) {
    let workspace = env.root.path().join(name).join("ws");
    std::fs::create_dir_all(&workspace).expect("mkdir");
    std::fs::write(workspace.join("test.journey"), source).expect("write workspace");
    let data = env.root.path().join(name).join("data");
    let args = env.store_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&workspace, &data, &args);
    assert_eq!(daemon.role().as_deref(), Some("standby"));
    (daemon, workspace)
}

fn write_workspace(workspace: &Path, source: &str) {
    std::fs::write(workspace.join("test.journey"), source).expect("write workspace");
}

// `lifecycle.rs`'s reload workspace (one journey that migrates, one pinned) and its enrollment reader.
use super::lifecycle::{enrollment, RELOAD_WORKSPACE};

fn bought(customer: &str, message_id: &str) -> String {
    format!(r#"{{"userId":"{customer}","event":"bought","properties":{{"amount":1}},"messageId":"{message_id}"}}"#)
}

fn bundle_of(daemon: &Daemon) -> serde_json::Value {
    let journeys = daemon.get("/v1/journeys");
    assert_eq!(journeys.status, 200, "{}", journeys.body);
    journeys.json()["bundle"].clone()
}

/// `POST /v1/reload` on a standby with a changed workspace rolls the
/// owner to it (pinned enrollments stay, migrating ones move), both nodes
/// then run the same version; a reload on the owner is followed by the
/// standby; a broken workspace on the standby is refused as on the owner.
#[test]
fn a_reload_on_any_node_rolls_every_node_to_the_new_version() {
    if skip() {
        return;
    }
    let env = Env::on(RELOAD_WORKSPACE, Backend::Postgres);
    let owner = env.start(&[]);
    let (standby, standby_workspace) = standby_with(&env, "standby", RELOAD_WORKSPACE);
    assert_eq!(owner.post("/v1/track", &bought("r1", "m1")).status, 200);
    let migrating_before = enrollment(&owner, "r1", "migrating");
    let pinned_before = enrollment(&owner, "r1", "pinned");
    let first = bundle_of(&owner);
    assert_eq!(bundle_of(&standby), first);

    // A broken workspace on the standby: refused with its diagnostics, the
    // running version kept on both nodes.
    write_workspace(
        &standby_workspace,
        &RELOAD_WORKSPACE.replace("send later", "send nonexistent"),
    );
    let refused = standby.post("/v1/reload", "");
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.json()["diagnostics"]
        .as_str()
        .is_some_and(|d| d.contains("nonexistent")));
    assert_eq!(bundle_of(&owner), first);

    // New versions of both journeys, reloaded on the standby.
    let second_source = RELOAD_WORKSPACE
        .replace("pause: wait 1h", "pause: wait 2h")
        .replace("hold: wait 1h", "hold: wait 2h");
    write_workspace(&standby_workspace, &second_source);
    let reloaded = standby.post("/v1/reload", "");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    let report = reloaded.json();
    assert_eq!(report["changed"], true, "{report}");
    assert_eq!(report["enrollments_migrated"], 1, "{report}");
    let second = report["bundle"].clone();
    assert_ne!(second, first);
    // The owner runs it at once (the reply came once it was current) and
    // so does the standby.
    assert_eq!(bundle_of(&owner), second);
    assert_eq!(bundle_of(&standby), second);
    let health = standby.request_with("GET", "/healthz", None, None).json();
    assert_eq!(health["bundle"], second, "{health}");
    let migrated = enrollment(&owner, "r1", "migrating");
    assert_ne!(migrated["version"], migrating_before["version"]);
    assert_eq!(migrated["label"], "pause");
    let pinned = enrollment(&owner, "r1", "pinned");
    assert_eq!(pinned["version"], pinned_before["version"]);
    assert_eq!(pinned["label"], "hold");
    // The standby reads the customer as the owner does.
    assert_eq!(
        standby.get("/v1/customers/r1").json(),
        owner.get("/v1/customers/r1").json()
    );
    // A new event gets the new versions, also when posted to the standby.
    assert_eq!(standby.post("/v1/track", &bought("r2", "m2")).status, 200);
    eventually("the standby's event applied", || {
        (owner.get("/v1/customers/r2").status == 200).then_some(())
    });
    assert_ne!(enrollment(&owner, "r2", "pinned")["version"], pinned_before["version"]);
    assert_eq!(enrollment(&owner, "r2", "migrating")["version"], migrated["version"]);
    // The same again: nothing changes.
    let again = standby.post("/v1/reload", "");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["changed"], false, "{}", again.body);

    // SIGHUP on the standby publishes its workspace too.
    write_workspace(
        &standby_workspace,
        &RELOAD_WORKSPACE
            .replace("pause: wait 1h", "pause: wait 4h")
            .replace("hold: wait 1h", "hold: wait 2h"),
    );
    standby.signal("HUP");
    eventually("the owner running the standby's workspace after SIGHUP", || {
        (bundle_of(&owner) != second).then_some(())
    });
    assert_eq!(standby.role().as_deref(), Some("standby"));
    eventually("the standby running it too", || {
        (bundle_of(&standby) == bundle_of(&owner)).then_some(())
    });

    // The reverse: a reload on the owner, the standby follows.
    write_workspace(
        &env.workspace(),
        &RELOAD_WORKSPACE
            .replace("pause: wait 1h", "pause: wait 3h")
            .replace("hold: wait 1h", "hold: wait 2h"),
    );
    let reloaded = owner.post("/v1/reload", "");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    let third = reloaded.json()["bundle"].clone();
    assert_ne!(third, second);
    eventually("the standby following the owner's reload", || {
        (bundle_of(&standby) == third).then_some(())
    });
    // Woken by the owner's notification (and looking every second anyway).
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN journeyc_version'")
            .trim(),
        "1"
    );
    assert_eq!(standby.get("/v1/journeys").json(), owner.get("/v1/journeys").json());
    assert_eq!(enrollment(&owner, "r1", "migrating")["label"], "pause");
    assert_eq!(enrollment(&owner, "r1", "pinned")["version"], pinned_before["version"]);

    // The owner stops: the standby takes over and keeps running the
    // database's version, not its own workspace's (the SIGHUP one).
    assert_eq!(owner.terminate(), Some(0));
    standby.wait_until_owner();
    assert_eq!(bundle_of(&standby), third);
    assert_eq!(
        enrollment(&standby, "r1", "pinned")["version"],
        pinned_before["version"]
    );
    assert_eq!(standby.terminate(), Some(0));
}

fn metric(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(str::to_string)
}

/// Stats, `/v1/journeys`, `/ui` and `/metrics` from a standby equal the
/// owner's; a batch with a bad call posted to the standby has its valid
/// calls applied and the bad one kept, listed on both nodes; `DELETE` on
/// the standby erases the customer (and its refusal) as the owner would.
#[test]
fn a_standby_serves_stats_refusals_and_erasure_as_the_owner_does() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = standby_with(&env, "standby", WORKSPACE);
    for (customer, n) in [("a1", 1), ("a2", 2), ("a3", 3)] {
        assert_eq!(
            owner.post("/v1/track", &ping(customer, &format!("p{n}"), n)).status,
            200
        );
    }
    assert_eq!(owner.post("/v1/track", &bought("b1", "mb1")).status, 200);

    // The same aggregates from both nodes.
    for path in [
        "/v1/journeys",
        "/v1/journeys/pinger/stats",
        "/v1/journeys/delayed/stats",
        "/v1/journeys/delayed/graph",
    ] {
        let (from_owner, from_standby) = (owner.get(path), standby.get(path));
        assert_eq!(from_standby.status, 200, "{path}: {}", from_standby.body);
        assert_eq!(from_standby.json(), from_owner.json(), "{path}");
    }
    let stats = standby.get("/v1/journeys/pinger/stats").json();
    assert!(stats.to_string().contains('3'), "{stats}");
    for path in ["/ui", "/ui/app.js", "/ui/app.css"] {
        let (from_owner, from_standby) = (owner.get(path), standby.get(path));
        assert_eq!(from_standby.status, 200, "{path}");
        assert_eq!(from_standby.body, from_owner.body, "{path}");
    }
    let (owner_metrics, standby_metrics) = (owner.get("/metrics").body, standby.get("/metrics").body);
    for gauge in [
        "journeyc_timers_pending",
        "journeyc_customers_failing",
        "journeyc_outbox_dead_letters",
    ] {
        assert!(metric(&standby_metrics, gauge).is_some(), "{gauge}: {standby_metrics}");
        assert_eq!(
            metric(&standby_metrics, gauge),
            metric(&owner_metrics, gauge),
            "{gauge}"
        );
    }
    assert_eq!(
        metric(&standby_metrics, "journeyc_timers_pending").as_deref(),
        Some("1")
    );
    assert_eq!(standby.get("/v1/no-such").status, 503);
    let wrong_method = standby.request("PUT", "/v1/customers/a1", None);
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.body);
    assert_eq!(
        wrong_method.json(),
        owner.request("PUT", "/v1/customers/a1", None).json()
    );

    // A batch with one bad call: answered as the owner answers it, the
    // valid calls applied by the owner, the bad one kept.
    let bad = r#"{"type":"track","userId":"e1","event":"ping","properties":{"n":"WALRUS-9"},"messageId":"bad1"}"#;
    let batch = format!(
        r#"{{"batch":[{},{bad},{}]}}"#,
        ping("e1", "good1", 10),
        ping("e2", "good2", 11)
    );
    let from_standby = standby.post("/v1/batch", &batch);
    assert_eq!(from_standby.status, 200, "{}", from_standby.body);
    let answer = from_standby.json();
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 1, "{answer}");
    assert_eq!(answer["rejected"][0]["field"], "properties.n", "{answer}");
    eventually("the standby's valid calls applied", || {
        (owner.get("/v1/customers/e1").status == 200 && owner.get("/v1/customers/e2").status == 200).then_some(())
    });
    // Only a bad call: 422 with the reason, kept too.
    let only_bad = standby.post("/v1/track", bad);
    assert_eq!(only_bad.status, 422, "{}", only_bad.body);
    assert_eq!(only_bad.json()["error"]["field"], "properties.n", "{}", only_bad.body);
    let listed = standby.get("/v1/rejected");
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json();
    assert_eq!(listed["total"], 2, "{listed}");
    assert_eq!(listed["rejected"][0]["customer"], "e1", "{listed}");
    assert_eq!(listed["rejected"][0]["index"], 1, "{listed}");
    assert_eq!(listed["rejected"][1]["endpoint"], "track", "{listed}");
    assert_eq!(owner.get("/v1/rejected").json(), listed);

    // DELETE on the standby: the owner erases, the standby answers as the
    // owner does; gone on both nodes, its refusals too, and no record of
    // the handing over is left.
    let erased = standby.request("DELETE", "/v1/customers/e1", None);
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(
        erased.json(),
        serde_json::json!({"success": true, "erased": "e1", "rejected_erased": 2})
    );
    assert_eq!(owner.get("/v1/customers/e1").status, 404);
    assert_eq!(standby.get("/v1/customers/e1").status, 404);
    assert_eq!(owner.get("/v1/customers/e2").status, 200);
    assert_eq!(owner.get("/v1/rejected").json()["total"], 0);
    assert_eq!(standby.get("/v1/rejected").json()["total"], 0);
    let rows_naming = |needle: &str| {
        pg.psql(&format!(
            "SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) <> 120 AND \
             (position('{needle}'::bytea in key) > 0 OR position('{needle}'::bytea in value) > 0)"
        ))
        .trim()
        .to_string()
    };
    assert_eq!(rows_naming("WALRUS-9"), "0");
    assert_eq!(rows_naming("\"e1\""), "0");
    assert_eq!(
        pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) IN (113, 81)")
            .trim(),
        "0",
        "command or answer records left"
    );
    let again = standby.request("DELETE", "/v1/customers/e1", None);
    assert_eq!(again.status, 404, "{}", again.body);
    assert_eq!(again.json(), owner.request("DELETE", "/v1/customers/e1", None).json());
    // A call acked by the standby, then its customer's DELETE there: the
    // erasure comes after the call is applied, as on the owner, also
    // behind a backlog of other inbox records.
    for round in 0..3 {
        for chunk in 0..3 {
            let calls: Vec<String> = (0..500)
                .map(|i| {
                    ping(
                        &format!("busy-{round}-{chunk}-{i}"),
                        &format!("b{round}-{chunk}-{i}"),
                        1,
                    )
                })
                .collect();
            let backlog = standby.post("/v1/batch", &format!(r#"{{"batch":[{}]}}"#, calls.join(",")));
            assert_eq!(backlog.status, 200, "{}", backlog.body);
        }
        let customer = format!("late-{round}");
        assert_eq!(
            standby
                .post("/v1/track", &ping(&customer, &format!("l{round}"), 20))
                .status,
            200
        );
        let erased = standby.request("DELETE", &format!("/v1/customers/{customer}"), None);
        assert_eq!(erased.status, 200, "{customer}: {}", erased.body);
        assert_eq!(owner.get(&format!("/v1/customers/{customer}")).status, 404);
    }
    // Without the token, as on the owner.
    assert_eq!(
        standby
            .request_with("DELETE", "/v1/customers/e2", None, Some("Bearer wrong"))
            .status,
        401
    );
    assert_eq!(standby.request_with("GET", "/v1/rejected", None, None).status, 401);
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(standby.terminate(), Some(0));
}

/// An inbox record the owner cannot read (written directly in SQL) is not
/// dropped: it moves to the refused calls, listed by `/v1/rejected`, and
/// the inbox is left empty; a record of calls that do not decode keeps each
/// call with its customer.
#[test]
fn an_unreadable_inbox_record_is_kept_as_refused() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    pg.psql(
        "INSERT INTO journeyc_kv VALUES \
         (-1, '\\x69ffffffff00000001'::bytea, convert_to('not json OCTOPUS-3', 'UTF8')), \
         (-1, '\\x69ffffffff00000002'::bytea, convert_to('[{\"customer\":\"z1\",\"input\":\"SQUID-4\"}]', 'UTF8')); \
         NOTIFY journeyc_inbox",
    );
    eventually("an empty inbox", || {
        (pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 105")
            .trim()
            == "0")
            .then_some(())
    });
    let listed = owner.get("/v1/rejected").json();
    assert_eq!(listed["total"], 2, "{listed}");
    let entries = listed["rejected"].as_array().expect("entries");
    assert!(entries.iter().all(|e| e["endpoint"] == "inbox"), "{listed}");
    assert_eq!(entries[0]["body"], "not json OCTOPUS-3", "{listed}");
    assert_eq!(entries[1]["customer"], "z1", "{listed}");
    assert_eq!(entries[1]["call"]["input"], "SQUID-4", "{listed}");
    // The owner goes on applying what comes after.
    assert_eq!(owner.post("/v1/track", &ping("a1", "p1", 1)).status, 200);
    assert_eq!(owner.get("/v1/customers/a1").status, 200);
    // Erasing the customer a kept call names erases the call.
    let erased = owner.request("DELETE", "/v1/customers/z1", None);
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(erased.json()["rejected_erased"], 1, "{}", erased.body);
    assert_eq!(owner.terminate(), Some(0));
}

/// The owner is killed -9: a `DELETE` posted to the standby meanwhile is
/// kept, answered 202 when the standby takes the lease over (its takeover
/// is not held up by the waiting request), and applied by it as the new
/// owner; the answer left unread names no customer.
#[test]
fn a_handed_over_erasure_outlives_the_owner() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = standby_with(&env, "standby", WORKSPACE);
    assert_eq!(owner.post("/v1/track", &ping("doomed-71", "d1", 1)).status, 200);
    assert_eq!(owner.post("/v1/track", &ping("kept-72", "k1", 2)).status, 200);
    owner.kill();
    let erased = standby.request("DELETE", "/v1/customers/doomed-71", None);
    assert_eq!(erased.status, 202, "{}", erased.body);
    let erased = erased.json();
    assert_eq!(erased["pending"], true, "{erased}");
    // Answered at the takeover, not after the 30 s bound.
    assert!(
        erased["reason"].as_str().is_some_and(|r| r.contains("taking it over")),
        "{erased}"
    );
    standby.wait_until_owner();
    eventually("the erasure applied by the new owner", || {
        (standby.get("/v1/customers/doomed-71").status == 404).then_some(())
    });
    assert_eq!(standby.get("/v1/customers/kept-72").status, 200);
    assert_eq!(
        pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 113")
            .trim(),
        "0",
        "the command is gone"
    );
    let answers = pg.psql("SELECT convert_from(value, 'UTF8') FROM journeyc_kv WHERE get_byte(key, 0) = 81");
    assert_eq!(answers.trim().lines().count(), 1, "{answers}");
    assert!(answers.contains("\"known\":true"), "{answers}");
    assert!(!answers.contains("doomed"), "{answers}");
    assert_eq!(standby.terminate(), Some(0));
}
